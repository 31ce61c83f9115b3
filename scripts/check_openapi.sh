#!/usr/bin/env bash
# Validates the checked-in OpenAPI document (openapi.json at the repository root) against the
# OpenAPI 3.1 specification with openapi-spec-validator, installed on first use into a venv.
#
# Usage (from anywhere): scripts/check_openapi.sh [file]   (default: the repository's openapi.json)
#
# Environment:
#   TORUA_VENV  the venv to use or create (default: ~/.cache/torua-venv)
#
# Exits non-zero when the document is invalid or the validator cannot be installed.
set -euo pipefail

log() { echo "check_openapi: $*" >&2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
doc=${1:-$root/openapi.json}
venv=${TORUA_VENV:-$HOME/.cache/torua-venv}

if [[ ! -f $doc ]]; then
  log "no $doc; generate it with: UPDATE_OPENAPI=1 cargo test --release -p torua --lib openapi"
  exit 1
fi
if [[ ! -x $venv/bin/python ]]; then
  log "creating a venv in $venv"
  python3 -m venv "$venv"
fi
if [[ ! -x $venv/bin/openapi-spec-validator ]]; then
  log "installing openapi-spec-validator into $venv"
  "$venv/bin/pip" install --quiet openapi-spec-validator
fi
"$venv/bin/openapi-spec-validator" "$doc"
