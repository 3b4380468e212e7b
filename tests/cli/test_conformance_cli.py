"""The official MCP conformance suite with ``mcp-call`` as the client (via ``conformance_wrapper.py``).

The suite machinery is ``tests/conformance/test_conformance.py``'s own (same pinned suite,
same pass rule, same skip-locally / fail-under-CI rule); only the client command differs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import test_conformance as suite_runner
from tests.conformance.test_conformance import Suite, suite  # noqa: F401  (fixture)

pytestmark = pytest.mark.conformance

WRAPPER = Path(__file__).resolve().with_name("conformance_wrapper.py")
SCENARIOS = ("initialize", "tools_call")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_mcp_call_passes_scenario(
    suite: Suite,  # noqa: F811
    scenario: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The runner builds its client command from CLIENT_SCRIPT: point it at the wrapper.
    monkeypatch.setattr(suite_runner, "CLIENT_SCRIPT", WRAPPER)
    run = suite_runner._run_once(suite, scenario, tmp_path / "run")
    assert not run.problems(scenario), run.report(scenario)
