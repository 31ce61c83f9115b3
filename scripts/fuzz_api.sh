#!/usr/bin/env bash
# Schema-driven fuzzing of a running torua node with schemathesis: requests generated from the
# checked-in OpenAPI contract (openapi.json), valid and invalid, against every operation; every
# answer must be a non-5xx that matches the contract (status, content type, headers, body).
#
# Usage: scripts/fuzz_api.sh BASE_URL [extra schemathesis options...]
#   e.g. scripts/fuzz_api.sh https://127.0.0.1:7100 -H "Authorization: Bearer $KEY"
#
# Environment:
#   TORUA_VENV          venv to use or create (default: ~/.cache/torua-venv)
#   TORUA_CA            CA bundle (PEM) the node's HTTPS certificate chains to (https only)
#   TORUA_FUZZ_EXAMPLES generated requests per operation and mode (default: 50)
#   TORUA_FUZZ_SEED     seed, for a reproducible run (default: 1)
#   TORUA_FUZZ_MAX_TIME time budget of the run in seconds (default: none)
#   TORUA_FUZZ_WORKERS  concurrent workers (default: 1). More than one makes CPython 3.11's
#                       ast.parse, which hypothesis calls to describe its strategies, fail now
#                       and then with "AST constructor recursion depth mismatch" (CPython
#                       gh-106905), a crash of the tool that says nothing about the API.
#
# `tests/fuzz_process.rs` runs it in `make test` against a 3-node cluster with and without keys;
# `make fuzz` runs it longer.
set -euo pipefail

log() { echo "fuzz_api: $*" >&2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${TORUA_VENV:-$HOME/.cache/torua-venv}
base=${1:?usage: scripts/fuzz_api.sh BASE_URL [schemathesis options...]}
shift

if [[ ! -x $venv/bin/python ]]; then
  log "creating a venv in $venv"
  python3 -m venv "$venv"
fi
if [[ ! -x $venv/bin/schemathesis ]]; then
  log "installing schemathesis into $venv"
  "$venv/bin/pip" install --quiet 'schemathesis==4.32.5' 'hypothesis==6.170.27'
fi

limit=()
if [[ -n ${TORUA_FUZZ_MAX_TIME:-} ]]; then
  limit=(--max-time "$TORUA_FUZZ_MAX_TIME")
fi
tls=()
if [[ $base == https://* ]]; then
  tls=(--tls-verify "${TORUA_CA:?https needs TORUA_CA, the CA bundle (torua cert --secret-ca)}")
fi

# Checks: every response check of the contract (5xx but the documented 503/504 fail: see
# scripts/schemathesis.toml). Not the checks that judge what the API accepts
# (positive_data_acceptance, negative_data_rejection: the contract cannot state every rule, such
# as "the shard must exist"), nor the stateful ones that assume REST resources.
exec "$venv/bin/schemathesis" --config-file "$root/scripts/schemathesis.toml" run "$root/openapi.json" \
  --url "$base" \
  "${tls[@]}" "${limit[@]}" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${TORUA_FUZZ_EXAMPLES:-50}" \
  --seed "${TORUA_FUZZ_SEED:-1}" \
  --workers "${TORUA_FUZZ_WORKERS:-1}" \
  --request-timeout 70 \
  --suppress-health-check all \
  --no-color \
  "$@"
