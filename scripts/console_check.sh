#!/usr/bin/env bash
# Runs the operator console's browser test (tests/console/check_console.py): headless Chromium
# driven by selenium against a running cluster. tests/console_process.rs runs it in `make test`.
#
# Usage: scripts/console_check.sh --url URL --ids node-1,node-2,node-3 --drain ID --kill ID --shots DIR
#
# Environment:
#   TORUA_CONSOLE_VENV  the venv with selenium, created when missing
#                       (default: ${CARGO_TARGET_DIR:-<repo>/target}/console-venv)
#
# Chromium and chromedriver come from Debian (scripts/setup.sh installs them); selenium is told
# where they are, so it never downloads a browser.
set -euo pipefail

log() { echo "console_check: $*" >&2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${TORUA_CONSOLE_VENV:-${CARGO_TARGET_DIR:-$root/target}/console-venv}

for tool in chromium chromedriver; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "$tool is missing; run scripts/setup.sh (it installs the Debian packages chromium and chromium-driver)"
    exit 1
  fi
done
if [[ ! -x $venv/bin/python ]]; then
  log "creating a venv in $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  log "installing selenium into $venv"
  "$venv/bin/pip" install --quiet 'selenium>=4.20,<5'
fi
# Selenium Manager must not try to fetch drivers: the paths are given explicitly.
export SE_OFFLINE=true
exec "$venv/bin/python" -u "$root/tests/console/check_console.py" "$@"
