#!/usr/bin/env bash
# The demo: sets up .venv (package + example servers), starts three example MCP servers on
# loopback sharing state, and shows ResilientClient riding through backend kills (after the
# answer was recorded, and mid-run before a transactional tool committed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh examples
exec .venv/bin/python -m examples.demo "$@"
