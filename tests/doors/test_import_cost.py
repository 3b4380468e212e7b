"""``import mcp_resilient`` imports no framework and no OpenTelemetry (checked in a fresh process)."""

from __future__ import annotations

import subprocess
import sys

from examples._launch import REPO_ROOT

HEAVY = ("opentelemetry", "fastmcp", "pydantic_ai", "agents", "langchain", "langchain_core")
CHECK = (
    "import sys, mcp_resilient, mcp_resilient.integrations;"
    f" heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r});"
    " assert not heavy, heavy"
)


def test_import_mcp_resilient_stays_light() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_check_would_see_a_heavy_import() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import opentelemetry.trace;" + CHECK],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "opentelemetry" in done.stderr
