#!/usr/bin/env bash
# The test command: installs what the tests need (Debian haproxy, redis-server,
# redis-sentinel and postgresql, a local
# Node 22 with the MCP conformance suite, the Python dev extras), then runs the checks
# (ruff, mypy strict, mkdocs --strict) and the whole pytest suite, on two workers
# (PYTEST_WORKERS). Extra arguments go to pytest.
#
# Python packages come from the lock (constraints.txt) into .venv: what CI tested.
# `bash scripts/test.sh --latest` runs the same checks and suite against the newest
# releases pyproject.toml allows, in .venv-latest (the locked .venv is left alone).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ "${1:-}" = "--latest" ]; then
    shift
    export LATEST=1
    venv=.venv-latest
fi

PACKAGES="haproxy redis-server redis-sentinel postgresql"
if ! command -v haproxy >/dev/null || ! command -v redis-server >/dev/null \
    || ! command -v redis-sentinel >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y $PACKAGES
    else
        echo "test.sh: $PACKAGES are needed: apt-get install -y $PACKAGES" >&2
        exit 1
    fi
fi
bash scripts/setup.sh dev
bash scripts/install-node22.sh >/dev/null

echo "== ruff"
"$venv"/bin/ruff check mcp_resilient tests examples benchmarks
"$venv"/bin/ruff format --check mcp_resilient tests examples benchmarks
echo "== mypy (strict)"
"$venv"/bin/mypy
echo "== mkdocs build --strict"
export NO_MKDOCS_2_WARNING=1
"$venv"/bin/mkdocs build --strict --site-dir "$(mktemp -d)"
echo "== pytest"
# Two workers (pytest-xdist), a test file each at a time: most tests wait on server
# processes, so two at once cut the wall time (30.7 -> 18.8 min on 2 cores).
# PYTEST_WORKERS=0 runs everything in this process.
exec "$venv"/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
