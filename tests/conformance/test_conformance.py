"""Run the official MCP conformance suite's client scenarios against ``mcp_resilient``.

The suite (npm ``@modelcontextprotocol/conformance``, pinned below) needs Node 22, which
``scripts/install-node22.sh`` puts in ``.tools/node22`` (or ``$MCP_CONFORMANCE_NODE_PREFIX``).
For each scenario the suite starts its own test server on loopback, runs
``python tests/conformance/client.py <server-url>`` with ``MCP_CONFORMANCE_SCENARIO`` set, and
writes its verdicts to ``<output-dir>/<scenario>-<timestamp>/checks.json``.

A scenario passes when the suite exits 0 *and* its checks.json has no FAILURE or WARNING check
*and* every check this test expects for the scenario is there with status SUCCESS (so a suite
that silently stopped checking something does not pass).

Without the suite: skipped locally, failed under CI (env ``CI`` set).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

pytestmark = pytest.mark.conformance

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_SCRIPT = Path(__file__).resolve().with_name("client.py")
INSTALL_COMMAND = "bash scripts/install-node22.sh"
SUITE_PACKAGE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.2.0-alpha.12"
NODE_MAJOR = 22

RUN_TIMEOUT = 120  # seconds for one scenario run, suite and client together
CLIENT_TIMEOUT_MS = 60_000  # the suite kills the client after this (its default is 30 s)

# The checks each scenario must report as SUCCESS (ids as in the suite's checks.json).
EXPECTED_CHECKS: dict[str, tuple[str, ...]] = {
    "initialize": ("mcp-client-initialization",),
    "tools_call": ("tool-add-numbers",),
    "sse-retry": (
        "client-sse-graceful-reconnect",
        "client-sse-retry-timing",
        "client-sse-last-event-id",
    ),
    "elicitation-sep1034-client-defaults": (
        "client-elicitation-sep1034-string-default",
        "client-elicitation-sep1034-integer-default",
        "client-elicitation-sep1034-number-default",
        "client-elicitation-sep1034-enum-default",
        "client-elicitation-sep1034-boolean-default",
    ),
    "request-metadata": (
        "sep-2575-http-client-sends-version-header",
        "sep-2575-client-populates-meta",
        "sep-2575-client-sends-client-info",
        "sep-2575-http-version-header-matches-meta",
        "sep-2575-client-declares-roots-capability",
        "sep-2575-client-declares-sampling-capability",
        "sep-2575-client-declares-elicitation-capability",
        "sep-2575-client-retry-supported-version",
    ),
    "sep-2322-client-request-state": (
        "sep-2322-client-request-state-echoed",
        "sep-2322-client-jsonrpc-id-different",
        "sep-2322-client-no-state-omitted",
        "sep-2322-client-parallel-isolation",
        "sep-2322-default-result-type-complete",
    ),
    "http-standard-headers": ("sep-2243-client-includes-standard-headers",),
    "http-custom-headers": (
        "sep-2243-client-supports-custom-headers",
        "sep-2243-client-mirrors-designated-params",
        "sep-2243-client-encode-values",
        "sep-2243-client-base64-unsafe",
        "sep-2243-client-omit-null",
    ),
    "http-invalid-tool-headers": (
        "sep-2243-client-reject-invalid-tool",
        "sep-2243-x-mcp-header-not-empty",
        "sep-2243-x-mcp-header-primitive-only",
        "sep-2243-x-mcp-header-unique",
        "sep-2243-x-mcp-header-charset",
    ),
    "json-schema-ref-no-deref": ("sep-2106-no-network-ref-deref",),
    "json-schema-2020-12-preservation": (
        "json-schema-2020-12-client-tool-found",
        "json-schema-2020-12-client-echo-completed",
        "json-schema-2020-12-client-$schema-preserved",
        "json-schema-2020-12-client-$defs-preserved",
        "json-schema-2020-12-client-additionalProperties-preserved",
        "sep-2106-client-composition-keywords-preserved",
        "sep-2106-client-conditional-keywords-preserved",
        "sep-2106-client-anchor-keyword-preserved",
        "wire-schema-valid",
    ),
}

# The spec versions each scenario applies to, as `conformance list --client` prints them (the
# suite fixture checks that they still match). A scenario runs once at its default version (the
# suite's: 2026-07-28 for scenarios introduced in it, else 2025-11-25) and once more with
# `--spec-version V` for every other version it lists, 2026-07-28 included.
SPEC_VERSIONS: dict[str, tuple[str, ...]] = {
    "initialize": ("2025-06-18", "2025-11-25"),
    "tools_call": ("2025-06-18", "2025-11-25", "2026-07-28"),
    "elicitation-sep1034-client-defaults": ("2025-11-25",),
    "sse-retry": ("2025-11-25",),
    "request-metadata": ("2026-07-28",),
    "sep-2322-client-request-state": ("2026-07-28",),
    "http-standard-headers": ("2026-07-28",),
    "http-custom-headers": ("2026-07-28",),
    "http-invalid-tool-headers": ("2026-07-28",),
    "json-schema-ref-no-deref": ("2026-07-28",),
    "json-schema-2020-12-preservation": ("2025-11-25", "2026-07-28"),
}
STATELESS_VERSION = "2026-07-28"


def default_spec_version(scenario: str) -> str:
    """The version the suite runs ``scenario`` at without ``--spec-version``."""
    versions = SPEC_VERSIONS[scenario]
    return STATELESS_VERSION if versions == (STATELESS_VERSION,) else "2025-11-25"


def scenario_runs() -> list[tuple[str, str | None]]:
    """(scenario, spec version to pass, ``None`` for the default) for every run."""
    runs: list[tuple[str, str | None]] = []
    for scenario, versions in SPEC_VERSIONS.items():
        runs.append((scenario, None))
        runs += [(scenario, v) for v in versions if v != default_spec_version(scenario)]
    return runs


# sse-retry times the reconnect (retry: 500 ms; 450-700 ms is SUCCESS, 700-1000 ms WARNING).
# A run whose only complaint is a WARNING on this check gets one more try: on a busy machine a
# correct client can be late. A client that is early, very late, or late twice still fails.
TIMING_CHECK = "client-sse-retry-timing"
MAX_ATTEMPTS = 2

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Suite:
    node: Path
    cli: Path


@dataclass
class Run:
    exit_code: int | None
    output: str
    checks: list[dict[str, Any]] | None
    client_stderr: str

    def problems(self, scenario: str) -> list[str]:
        if self.checks is None:
            return ["the suite wrote no checks.json"]
        found: list[str] = [] if self.checks else ["the suite reported no checks at all"]
        for check in self.checks:
            if check.get("status") in ("FAILURE", "WARNING"):
                message = check.get("errorMessage") or check.get("description", "")
                found.append(f"{check.get('id')}: {check.get('status')}: {message}")
        # One id may be reported many times (once per method or header): it counts as
        # SUCCESS when one report is (FAILURE and WARNING reports are caught above).
        statuses: dict[Any, Any] = {}
        for check in self.checks:
            if check.get("id") and statuses.get(check["id"]) != "SUCCESS":
                statuses[check["id"]] = check.get("status")
        for check_id in EXPECTED_CHECKS[scenario]:
            if statuses.get(check_id) not in ("SUCCESS", "FAILURE", "WARNING"):
                found.append(f"{check_id}: expected SUCCESS, got {statuses.get(check_id)}")
        found += [
            line.strip()
            for line in self.client_stderr.splitlines()
            if line.startswith("conformance client:") and "FAILED" in line
        ]
        if self.exit_code != 0:
            found.append(f"the suite exited with {self.exit_code}")
        return list(dict.fromkeys(found))

    def only_timing_warning(self) -> bool:
        bad = [c for c in self.checks or [] if c.get("status") in ("FAILURE", "WARNING")]
        return (
            self.checks is not None
            and len(bad) == 1
            and bad[0].get("id") == TIMING_CHECK
            and bad[0].get("status") == "WARNING"
        )

    def report(self, scenario: str) -> str:
        lines = [f"scenario {scenario}:", *(f"  - {p}" for p in self.problems(scenario))]
        if self.client_stderr.strip():
            lines += ["--- client stderr ---", self.client_stderr.rstrip()]
        lines += ["--- suite output ---", self.output.rstrip()]
        return "\n".join(lines)


def _prefix() -> Path:
    configured = os.environ.get("MCP_CONFORMANCE_NODE_PREFIX")
    return Path(configured) if configured else REPO_ROOT / ".tools" / "node22"


def _missing(reason: str) -> NoReturn:
    message = (
        f"MCP conformance suite not available: {reason}. "
        f"Install Node {NODE_MAJOR} and {SUITE_PACKAGE}@{SUITE_VERSION} with: {INSTALL_COMMAND}"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def suite() -> Suite:
    prefix = _prefix()
    node = prefix / "bin" / "node"
    package_dir = prefix / "lib" / "node_modules" / SUITE_PACKAGE
    if not node.is_file():
        _missing(f"no {node}")
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        _missing(f"{node} --version failed: {exc}")
    if not version.startswith(f"v{NODE_MAJOR}."):
        _missing(f"{node} is {version}, not Node {NODE_MAJOR}")
    try:
        manifest = json.loads((package_dir / "package.json").read_text())
    except (OSError, ValueError):
        _missing(f"{SUITE_PACKAGE} is not installed in {prefix}")
    if manifest.get("version") != SUITE_VERSION:
        _missing(f"{SUITE_PACKAGE} is {manifest.get('version')}, not {SUITE_VERSION}")
    cli = package_dir / str(manifest.get("bin", {}).get("conformance", "dist/index.js"))
    listed = subprocess.run(
        [node, cli, "list", "--client"], capture_output=True, text=True, timeout=60
    )
    names = set(re.findall(r"^\s*- (\S+)", listed.stdout, flags=re.MULTILINE))
    unknown = sorted(set(EXPECTED_CHECKS) - names)
    assert not unknown, (
        f"{SUITE_PACKAGE}@{SUITE_VERSION} does not list client scenarios {unknown}:\n"
        f"{listed.stdout}{listed.stderr}"
    )
    listed_versions = {
        name: tuple(versions.split(","))
        for name, versions in re.findall(r"^\s*- (\S+) \[([^\]]+)\]", listed.stdout, re.MULTILINE)
    }
    drifted = {
        name: listed_versions.get(name)
        for name, versions in SPEC_VERSIONS.items()
        if listed_versions.get(name) != versions
    }
    assert not drifted, f"the suite lists other spec versions for {drifted}"
    return Suite(node=node, cli=cli)


def _run_once(
    suite: Suite,
    scenario: str,
    out_dir: Path,
    *,
    client_script: Path = CLIENT_SCRIPT,
    extra_args: tuple[str, ...] = (),
) -> Run:
    out_dir.mkdir(parents=True)
    # The suite splits --command on spaces and runs it through a shell: quote each part.
    command = shlex.join([sys.executable, str(client_script)])
    env = dict(os.environ)
    # Test this checkout's mcp_resilient, whatever is installed in site-packages.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("MCP_CONFORMANCE_SCENARIO", None)
    argv = [
        str(suite.node),
        str(suite.cli),
        "client",
        "--command",
        command,
        "--scenario",
        scenario,
        "--timeout",
        str(CLIENT_TIMEOUT_MS),
        "--output-dir",
        str(out_dir),
        *extra_args,
    ]
    # Own process group, so a timeout also ends the client the suite started.
    proc = subprocess.Popen(
        argv,
        cwd=out_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
        exit_code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n[test] the suite did not finish within {RUN_TIMEOUT} s; killed it"
        exit_code = None

    checks = None
    client_stderr = ""
    result_dirs = sorted(out_dir.glob(f"{scenario}-*"))
    if result_dirs:
        checks_file = result_dirs[-1] / "checks.json"
        if checks_file.is_file():
            checks = json.loads(checks_file.read_text())
        stderr_file = result_dirs[-1] / "stderr.txt"
        if stderr_file.is_file():
            client_stderr = stderr_file.read_text(errors="replace")
    return Run(exit_code, _ANSI.sub("", output), checks, client_stderr)


@pytest.mark.parametrize(
    ("scenario", "spec_version"),
    scenario_runs(),
    ids=[f"{s}@{v or 'default'}" for s, v in scenario_runs()],
)
def test_client_scenario(
    suite: Suite, scenario: str, spec_version: str | None, tmp_path: Path
) -> None:
    extra = ("--spec-version", spec_version) if spec_version else ()
    runs = [_run_once(suite, scenario, tmp_path / "attempt-1", extra_args=extra)]
    while (
        len(runs) < MAX_ATTEMPTS and runs[-1].problems(scenario) and runs[-1].only_timing_warning()
    ):
        runs.append(
            _run_once(suite, scenario, tmp_path / f"attempt-{len(runs) + 1}", extra_args=extra)
        )
    last = runs[-1]
    if last.problems(scenario):
        earlier = [f"attempt {i + 1}: {r.problems(scenario)}" for i, r in enumerate(runs[:-1])]
        pytest.fail("\n".join([*earlier, last.report(scenario)]), pytrace=False)
