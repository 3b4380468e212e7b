#!/usr/bin/env bash
# Set up a development environment: the package (editable) with the extras named in $1
# (default: dev). Idempotent and quiet when everything is already there.
#
# Locked by default: into .venv, with constraints.txt (scripts/lock.sh writes it), so
# a fresh machine gets exactly the versions CI tested. With LATEST=1: into .venv-latest,
# the newest releases allowed by pyproject.toml (no constraints, --upgrade), leaving the
# locked .venv as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python=${PYTHON:-python3}
if [ "${LATEST:-0}" = 1 ]; then
    venv=.venv-latest
    pins=()
    upgrade=(--upgrade --upgrade-strategy eager)
else
    venv=.venv
    pins=()
    [ -f constraints.txt ] && pins=(-c constraints.txt)
    upgrade=()
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$extras"
if [ "${LATEST:-0}" = 1 ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
    || { [ -f constraints.txt ] && [ constraints.txt -nt "$stamp" ]; }; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${upgrade[@]}" "${pins[@]}" -e ".[$extras]"
    touch "$stamp"
fi
