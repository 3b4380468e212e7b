"""``--protocol-version``: auto (the default) negotiates; any version of either era can be pinned."""

from __future__ import annotations

import io
import json

import pytest

from mcp_resilient.cli._args import PROTOCOL_VERSIONS, Options, UsageError, parse_args
from tests.cli.conftest import run_cli
from tests.rig import ServerProcess

URL = "http://127.0.0.1:8000/mcp"


@pytest.mark.parametrize("version", PROTOCOL_VERSIONS)
def test_every_era_can_be_chosen(version: str) -> None:
    parsed = parse_args(["--protocol-version", version, URL, "info"], stdin=io.StringIO(""))
    assert isinstance(parsed, Options)
    assert parsed.protocol_version == version


def test_the_choices_cover_both_eras() -> None:
    assert {"auto", "2026-07-28", "2025-11-25"} <= set(PROTOCOL_VERSIONS)


@pytest.mark.parametrize("version", ["2024-11-05", "2099-01-01", "latest", ""])
def test_other_versions_are_a_usage_error(version: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_args([URL, "info", "--protocol-version", version], stdin=io.StringIO(""))
    assert "2026-07-28" in str(info.value) and "auto" in str(info.value)


def test_unknown_version_exits_2_before_connecting() -> None:
    # Port 9 (discard) on loopback: if it tried to connect, it would fail differently.
    result = run_cli("http://127.0.0.1:9/mcp", "--protocol-version", "2024-11-05")
    assert result.code == 2, result
    assert "2026-07-28" in result.stderr


@pytest.mark.parametrize(
    ("choice", "expected", "has_session"),
    [
        ("2026-07-28", "2026-07-28", False),
        ("auto", "2026-07-28", False),  # the example server (FastMCP 4) speaks both eras
        ("2025-11-25", "2025-11-25", True),
    ],
)
def test_info_reports_the_era_in_use(
    mcp_server: ServerProcess, choice: str, expected: str, has_session: bool
) -> None:
    result = run_cli(mcp_server.url, "--protocol-version", choice, "--json")
    assert result.code == 0, result
    info = json.loads(result.stdout)
    assert info["protocolVersion"] == expected
    assert (info["sessionId"] is not None) is has_session
    assert info["serverInfo"]["name"] == "mcp-resilient-example"


def test_a_call_in_the_stateless_era(mcp_server: ServerProcess) -> None:
    result = run_cli(
        mcp_server.url, "--protocol-version", "2026-07-28", "call", "add", "a=1", "b=2", "--json"
    )
    assert result.code == 0, result
    assert json.loads(result.stdout)["structuredContent"] == {"a": 1.0, "b": 2.0, "sum": 3.0}
