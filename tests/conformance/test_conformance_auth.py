"""Run the conformance suite's ``auth/*`` client scenarios against ``mcp_resilient.auth.OAuth``.

Each scenario runs at its default spec version and again at ``--spec-version 2026-07-28``
where the suite lists that version for it (scenarios introduced in 2026-07-28 default to
it already; extension scenarios are not on the spec timeline). The client is
``tests/conformance/auth_client.py``; the suite harness (finding Node and the suite, one
run, reading checks.json) is shared with ``test_conformance.py``.

A run passes when the suite exits 0, reports at least one check, has no FAILURE or WARNING
check, and every check listed below for the scenario is SUCCESS; the client must not report
a failure either. DPoP (``auth/dpop``, ``auth/dpop-nonce``) is not implemented: see
docs/auth.md; those two are the only listed scenarios without a run here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conformance.test_conformance import Run, Suite, _run_once, suite

__all__ = ["suite"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.conformance

AUTH_CLIENT = Path(__file__).resolve().with_name("auth_client.py")
NEW_ERA = "2026-07-28"

_RESOURCE = (
    "resource-parameter-in-authorization",
    "resource-parameter-in-token",
    "resource-parameter-valid-uri",
    "resource-parameter-consistency",
    "resource-parameter-matches-prm",
)
_FLOW = (
    "authorization-server-metadata",
    "client-registration",
    "authorization-request",
    "token-request",
    "pkce-code-challenge-sent",
    "pkce-s256-method-used",
    "pkce-verifier-matches-challenge",
    "valid-bearer-token",
)

# The checks each scenario must report as SUCCESS.
EXPECTED: dict[str, tuple[str, ...]] = {
    "auth/metadata-default": ("prm-pathbased-requested", *_FLOW, *_RESOURCE),
    "auth/metadata-var1": ("prm-pathbased-requested", *_FLOW, *_RESOURCE),
    "auth/metadata-var2": (*_FLOW, *_RESOURCE),
    "auth/metadata-var3": (*_FLOW, *_RESOURCE),
    "auth/basic-cimd": ("cimd-client-id-used", "token-request", "valid-bearer-token"),
    "auth/scope-from-www-authenticate": ("scope-from-www-authenticate", "valid-bearer-token"),
    "auth/scope-from-scopes-supported": ("scope-from-scopes-supported", "valid-bearer-token"),
    "auth/scope-omitted-when-undefined": ("scope-omitted-when-undefined", "valid-bearer-token"),
    "auth/scope-step-up": ("scope-step-up-initial", "scope-step-up-escalation"),
    "auth/scope-retry-limit": ("scope-retry-limit",),
    "auth/token-endpoint-auth-basic": ("token-endpoint-auth-method", *_RESOURCE),
    "auth/token-endpoint-auth-post": ("token-endpoint-auth-method", *_RESOURCE),
    "auth/token-endpoint-auth-none": ("token-endpoint-auth-method", *_RESOURCE),
    "auth/pre-registration": ("pre-registration-auth", "valid-bearer-token"),
    "auth/2025-03-26-oauth-metadata-backcompat": (
        "authorization-server-metadata",
        "client-registration",
        "authorization-request",
        "token-request",
    ),
    "auth/2025-03-26-oauth-endpoint-fallback": (
        "client-registration",
        "authorization-request",
        "token-request",
    ),
    "auth/resource-mismatch": ("resource-mismatch-rejected",),
    "auth/offline-access-scope": ("sep-2207-offline-access-requested", "valid-bearer-token"),
    "auth/offline-access-not-supported": ("sep-2207-offline-access-not-requested",),
    "auth/authorization-server-migration": (
        "sep-2352-reregister-on-as-change",
        "sep-2352-no-reuse-on-as-change",
        "sep-2352-no-cross-as-credential-reuse",
    ),
    "auth/iss-supported": ("sep-2468-client-compare-iss-supported", "valid-bearer-token"),
    "auth/iss-not-advertised": ("sep-2468-client-proceed-no-iss", "valid-bearer-token"),
    "auth/iss-supported-missing": ("sep-2468-client-reject-missing-iss",),
    "auth/iss-wrong-issuer": ("sep-2468-client-compare-iss-supported",),
    "auth/iss-unexpected": ("sep-2468-client-compare-iss-unadvertised",),
    "auth/iss-normalized": ("sep-2468-client-no-normalization",),
    "auth/metadata-issuer-mismatch": ("sep-2468-client-validate-metadata-issuer",),
    "auth/client-credentials-basic": ("client-credentials-basic-auth", "valid-bearer-token"),
    "auth/client-credentials-jwt": ("client-credentials-jwt-verified", "valid-bearer-token"),
    "auth/enterprise-managed-authorization": (
        "complete-flow-token-exchange",
        "complete-flow-jwt-bearer",
        "valid-bearer-token",
    ),
    "auth/wif-jwt-bearer": ("wif-assertion-verified", "valid-bearer-token"),
}
# Only at 2026-07-28 (SEP-2350, SEP-837).
EXPECTED_NEW_ERA: dict[str, tuple[str, ...]] = {
    "auth/scope-step-up": ("sep-2350-scope-union-on-reauth",),
    "auth/metadata-default": ("sep-837-application-type-present",),
}
NOT_IMPLEMENTED = {"auth/dpop", "auth/dpop-nonce"}


def _listed(suite: Suite) -> dict[str, list[str]]:
    listed = subprocess.run(
        [suite.node, suite.cli, "list", "--client"], capture_output=True, text=True, timeout=60
    )
    return {
        name: [v.strip() for v in versions.split(",")]
        for name, versions in re.findall(r"^\s*- (auth/\S+) \[([^\]]*)\]", listed.stdout, re.M)
    }


# Scenarios the suite also runs at 2026-07-28 besides their (older) default version; the
# coverage test checks this against `conformance list --client`.
ALSO_NEW_ERA = {
    name
    for name in EXPECTED
    if not name.startswith(("auth/2025-03-26-", "auth/client-credentials-"))
    and name
    not in {
        "auth/enterprise-managed-authorization",
        "auth/wif-jwt-bearer",
        "auth/resource-mismatch",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
        "auth/authorization-server-migration",
        "auth/iss-supported",
        "auth/iss-not-advertised",
        "auth/iss-supported-missing",
        "auth/iss-wrong-issuer",
        "auth/iss-unexpected",
        "auth/iss-normalized",
        "auth/metadata-issuer-mismatch",
    }
}


def _runs() -> list[tuple[str, str | None]]:
    runs: list[tuple[str, str | None]] = [(scenario, None) for scenario in EXPECTED]
    runs += [(scenario, NEW_ERA) for scenario in EXPECTED if scenario in ALSO_NEW_ERA]
    return runs


def problems(run: Run, scenario: str, version: str | None) -> list[str]:
    if run.checks is None:
        return ["the suite wrote no checks.json (skipped or crashed)"]
    found = [
        f"{c.get('id')}: {c.get('status')}: {c.get('errorMessage') or c.get('description', '')}"
        for c in run.checks
        if c.get("status") in ("FAILURE", "WARNING")
    ]
    statuses: dict[str, set[str]] = {}
    for check in run.checks:
        statuses.setdefault(str(check.get("id")), set()).add(str(check.get("status")))
    if not any(c.get("status") == "SUCCESS" for c in run.checks):
        found.append("no check reported SUCCESS")
    wanted = EXPECTED[scenario] + (EXPECTED_NEW_ERA.get(scenario, ()) if version else ())
    for check_id in wanted:
        if statuses.get(check_id) != {"SUCCESS"}:
            found.append(f"{check_id}: expected SUCCESS, got {sorted(statuses.get(check_id, []))}")
    found += [
        line.strip()
        for line in run.client_stderr.splitlines()
        if line.startswith("conformance client:") and "FAILED" in line
    ]
    if run.exit_code != 0:
        found.append(f"the suite exited with {run.exit_code}")
    return found


def test_every_auth_scenario_is_covered(suite: Suite) -> None:
    listed = _listed(suite)
    assert listed, "the suite lists no auth/* client scenarios"
    missing = sorted(set(listed) - set(EXPECTED) - NOT_IMPLEMENTED)
    assert not missing, f"auth scenarios with no test here: {missing}"
    unknown = sorted(set(EXPECTED) - set(listed))
    assert not unknown, f"scenarios the suite does not list: {unknown}"
    also = {
        name for name, versions in listed.items() if NEW_ERA in versions and versions != [NEW_ERA]
    }
    assert also - NOT_IMPLEMENTED == ALSO_NEW_ERA, (
        f"runs at {NEW_ERA} out of date: listed {sorted(also)}, here {sorted(ALSO_NEW_ERA)}"
    )


@pytest.mark.parametrize(
    ("scenario", "version"), _runs(), ids=lambda v: v if isinstance(v, str) else "default"
)
def test_auth_scenario(suite: Suite, scenario: str, version: str | None, tmp_path: Path) -> None:
    versions = _listed(suite)[scenario]
    if version is not None and (version not in versions or versions == [version]):
        pytest.skip(
            f"{scenario} is listed for {versions}: the default run already covers {version}"
            if versions == [version]
            else f"{scenario} does not apply at {version}"
        )
    extra = ("--spec-version", version) if version else ()
    run = _run_once(suite, scenario, tmp_path / "run", client_script=AUTH_CLIENT, extra_args=extra)
    found = problems(run, scenario, version)
    if found:
        lines = [f"scenario {scenario} ({version or 'default version'}):"]
        lines += [f"  - {p}" for p in found]
        if run.client_stderr.strip():
            lines += ["--- client stderr ---", run.client_stderr.rstrip()[-6000:]]
        lines += ["--- suite output ---", run.output.rstrip()[-6000:]]
        pytest.fail("\n".join(lines), pytrace=False)
