#!/usr/bin/env bash
# The demo: sets up .venv (package + example servers), starts three example MCP servers on
# loopback sharing state, and shows ResilientClient riding through a backend kill.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh examples
exec .venv/bin/python -m examples.demo "$@"
