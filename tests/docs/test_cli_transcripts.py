"""Every ``mcp-call`` transcript in docs/cli.md, run against the example server replicas.

The conventions are in ``tests/docs/transcripts.py``: the docs' URLs point at the replicas,
ids, times and versions are normalized, ``...`` is a wildcard.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docs.transcripts import DOC_URL, Transcript, matches, parse_transcripts
from tests.rig import ServerCluster, ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_PAGE = REPO_ROOT / "docs" / "cli.md"
#: Deadline of one block's commands.
BLOCK_TIMEOUT = 90.0
_TRACE_LINE = re.compile(r"^\[\s*\d+\.\d+s\] ")
_CALL_SENT = re.compile(r"-> POST (?P<url>\S+)\s+tools/call ")


def _transcripts() -> Iterator[Any]:
    for transcript in parse_transcripts(CLI_PAGE, REPO_ROOT):
        yield pytest.param(transcript, id=f"cli.md:{transcript.line}")


class Ports:
    """The docs' ports and the replicas' real base URLs, both ways."""

    def __init__(self, bases: list[str], dead: str) -> None:
        self.bases = bases
        self.dead = dead

    def to_real(self, text: str) -> str:
        def real(match: re.Match[str]) -> str:
            index = int(match["port"]) - 8000
            return self.bases[index] if 0 <= index < len(self.bases) else self.dead

        return DOC_URL.sub(real, text)

    def to_doc(self, text: str, order: list[int] | None = None) -> str:
        """Real base URLs back to the docs' (``order[i]``: the docs' port of replica i)."""
        for index, base in enumerate(self.bases):
            port = 8000 + (order[index] if order else index)
            text = text.replace(base, f"http://127.0.0.1:{port}")
        return text.replace(self.dead, "http://127.0.0.1:8009")


@pytest.fixture(scope="module")
def ports(doc_servers: ServerCluster) -> Ports:
    return Ports([s.base_url for s in doc_servers], f"http://127.0.0.1:{free_port()}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The environment running the tests (.venv, or .venv-latest under --latest) has the
    # `mcp-call` under test: never another one found on the way.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    env.pop("COLUMNS", None)
    return env


def _script(commands: list[str], first_rc: int = 0) -> str:
    """One bash script; a marker line before each command splits the output."""
    lines = ["exec 2>&1", f"__rc={first_rc}"]
    for index, command in enumerate(commands):
        lines += [f"echo '@@command {index}@@'", "(exit $__rc)", command, "__rc=$?"]
    return "\n".join(lines) + "\n"


def _run_script(commands: list[str], first_rc: int = 0) -> list[list[str]]:
    proc = subprocess.run(
        ["bash", "-c", _script(commands, first_rc)],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    outputs: list[list[str]] = []
    for line in proc.stdout.splitlines():
        if re.fullmatch(r"@@command \d+@@", line):
            outputs.append([])
        elif outputs:
            outputs[-1].append(line)
    assert len(outputs) == len(commands), proc.stdout + proc.stderr
    return outputs


def _executions(server: ServerProcess, call_id: str) -> int:
    answer = httpx.get(f"{server.base_url}/executions/{call_id}", timeout=5)
    return int(answer.json()["count"])


def _run_killing(
    transcript: Transcript, command: str, ports: Ports, cluster: ServerCluster
) -> tuple[list[str], int, int]:
    """Run ``command -v``; kill the replica that got its ``tools/call`` when the page says.

    The trace (``-v``) names the replica; its lines, and the traceback ``-v`` adds to an
    error, are dropped from the output. Returns the output, the exit code and the index of
    the killed replica.
    """
    proc = subprocess.Popen(
        ["bash", "-c", f"exec 2>&1\n{command} -v\n"],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + BLOCK_TIMEOUT
    lines: list[str] = []
    serving: int | None = None
    killed: int | None = None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.1)
            line = proc.stdout.readline() if ready else None
            if line == "" and proc.poll() is not None:
                break
            if line:
                line = line.rstrip("\n")
                lines.append(line)
                sent = _CALL_SENT.search(line)
                if sent and serving is None:
                    base = sent["url"].rsplit("/", 1)[0]
                    serving = ports.bases.index(base)
            if killed is None and serving is not None and _kill_now(transcript, lines, cluster):
                cluster[serving].kill()
                killed = serving
        else:
            pytest.fail(f"{transcript.where}: did not finish within {BLOCK_TIMEOUT:g} s")
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert killed is not None, f"{transcript.where}: the kill never happened:\n" + "\n".join(lines)
    output: list[str] = []
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            break
        if not _TRACE_LINE.match(line):
            output.append(line)
    return output, rc, killed


def _kill_now(transcript: Transcript, lines: list[str], cluster: ServerCluster) -> bool:
    if transcript.kill_after is not None:
        return any(transcript.kill_after in line for line in lines if not _TRACE_LINE.match(line))
    assert transcript.kill_call_id is not None
    return _executions(cluster[0], transcript.kill_call_id) > 0


def _mismatch(transcript: Transcript, index: int, actual: list[str]) -> str:
    command = transcript.commands[index]
    return (
        f"{transcript.page}:{command.line}: `$ {command.command}` printed something else.\n"
        "--- the page shows:\n" + "\n".join(command.expected) + "\n--- the CLI printed "
        "(the docs' URLs put back; ids, times and versions are normalized when compared):\n"
        + "\n".join(actual)
    )


@pytest.mark.integration
@pytest.mark.parametrize("transcript", list(_transcripts()))
def test_cli_transcript_matches_the_real_cli(
    transcript: Transcript, ports: Ports, doc_servers: ServerCluster
) -> None:
    commands = [ports.to_real(c.command) for c in transcript.commands]
    first = 0
    outputs: list[list[str]] = []
    rc = 0
    if transcript.kill:
        try:
            output, rc, killed = _run_killing(transcript, commands[0], ports, doc_servers)
        finally:
            for server in doc_servers:
                if not server.running:
                    server.restart()
        # The killed replica is the page's 8001, the other of the first two its 8000.
        order = [0, 1, 2]
        order[killed], order[1 - killed] = 1, 0
        outputs.append([ports.to_doc(line, order) for line in output])
        first = 1
    if commands[first:]:
        rest = _run_script(commands[first:], rc)
        outputs += [[ports.to_doc(line) for line in output] for output in rest]
    for index, (command, actual) in enumerate(zip(transcript.commands, outputs, strict=True)):
        assert matches(command.expected, actual), _mismatch(transcript, index, actual)


def test_every_console_block_of_the_cli_page_is_an_mcp_call_transcript() -> None:
    """No transcript goes unchecked: each is a ``console`` block whose commands run here."""
    transcripts = parse_transcripts(CLI_PAGE, REPO_ROOT)
    assert len(transcripts) >= 10
    for transcript in transcripts:
        assert transcript.commands, transcript.where
        assert any("mcp-call" in c.command for c in transcript.commands), transcript.where
    text = CLI_PAGE.read_text(encoding="utf-8")
    # Output shown elsewhere (a ``text`` block) must not start with a prompt.
    assert not re.search(r"^```text\n\$ ", text, re.MULTILINE)


def test_matching_normalizes_what_varies_and_nothing_else() -> None:
    page = [
        "session      3ed2446c35c24b199502665957218721",
        "connect      122.7 ms (initialize)",
        "...",
        "[   0.057s] sse event id=90a61469-bf48-4ee9-8b9e-4e94a501f701 retry=1000ms",
        "server       mcp-resilient-example ...",
    ]
    run = [
        "session      ab469407b57949f1896fab3ba3557be4",
        "connect      4 ms (initialize)",
        "one line left out",
        "and another",
        "[  12.300s] sse event id=02f47e57-3a08-40f6-aad8-a9385857e373 retry=500ms",
        "server       mcp-resilient-example 4.2.3",
    ]
    assert matches(page, run)
    assert not matches(page, [*run[:1], "connect      4 ms (server/discover)", *run[2:]])
    assert not matches(page, run[:-1])  # a line missing
    assert not matches(["0"], ["1"])
    assert matches(['"roundTripMs": 2.9'], ['"roundTripMs": 68'])


def test_transcripts_are_parsed_with_their_directive(tmp_path: Path) -> None:
    page = tmp_path / "cli.md"
    page.write_text(
        "```console\n$ mcp-call URL ping\npong\n$ echo $?\n0\n```\n\n"
        '<!-- transcript: kill the serving replica after "progress 2/4" -->\n'
        "```console\n$ mcp-call A B call slow_progress\nprogress 1/4\n```\n\n"
        "```text\n$ not a transcript\n```\n",
        encoding="utf-8",
    )
    first, second = parse_transcripts(page, tmp_path)
    assert [(c.line, c.command, c.expected) for c in first.commands] == [
        (2, "mcp-call URL ping", ["pong"]),
        (4, "echo $?", ["0"]),
    ]
    assert (first.kill, second.kill, second.kill_after) == (False, True, "progress 2/4")
    page.write_text("<!-- transcript: kill it -->\n```console\n$ x\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad transcript directive"):
        parse_transcripts(page, tmp_path)
