"""Shell transcripts in the docs (```` ```console ```` blocks): parse, run, normalize, match.

A transcript is a fenced ``console`` block of ``$ command`` lines, each followed by what
the command printed (stdout and stderr, interleaved as a terminal shows them). The check
runs each command with bash against the example server replicas and compares the output
after normalizing what differs between runs:

- the docs' URLs ``http://127.0.0.1:800N`` stand for replica N (any other ``800N`` port for
  a port where nothing listens);
- session ids (32 hex digits), UUIDs, times (``12.3 ms``, ``0.023 s``, ``[   0.057s]``,
  ``"roundTripMs": 2.9``), sizes (``791 bytes``) and version numbers (``4.2.3``) are
  replaced by placeholders on both sides;
- in the documented output, a line ``...`` stands for any number of lines, and ``...``
  inside a line for any text (as doctest's ELLIPSIS).

A line ``<!-- transcript: kill the serving replica after "TEXT" -->`` above a block makes
the check ``kill -9`` the replica that received the block's first command's ``tools/call``
once the output shows TEXT (``... once call_id ID has run``: once the example server counts
an execution of ``increment`` with that ``call_id``). In the output, the killed replica is
the docs' port 8001 and the other one 8000, whichever of the two served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*transcript:\s*(?P<body>.*?)\s*-->\s*$")
_KILL = re.compile(
    r'^kill the serving replica (?:after "(?P<after>[^"]+)"|once call_id (?P<call_id>\S+) has run)$'
)
DOC_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(?P<port>80\d\d)(?![0-9])")

_NORMALIZE = [
    (re.compile(r"\[\s*\d+\.\d+s\]"), "[<t>]"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
        "<uuid>",
    ),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<id>"),
    (re.compile(r"(?<![\w.])\d+(?:\.\d+)? ?(ms|s|bytes)\b"), r"<n> \1"),
    (re.compile(r"(?<![\d.])\d+\.\d+\.\d+(?![\d.])"), "<version>"),
    (re.compile(r'("(?:roundTripMs|connectMs)": )\d+(?:\.\d+)?'), r"\1<n>"),
]


@dataclass
class Command:
    """One ``$ command`` line and the output the page shows for it."""

    line: int  # 1-based line in the page
    command: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Transcript:
    """One ``console`` block."""

    page: str
    line: int  # 1-based line of the opening fence
    commands: list[Command]
    kill: bool = False
    kill_after: str | None = None  # a line of output
    kill_call_id: str | None = None  # an ``increment`` call id

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse_transcripts(path: Path, root: Path) -> list[Transcript]:
    """The page's ``console`` blocks, with the ``transcript:`` directive just above each."""
    page = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Transcript] = []
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        fence = opened["fence"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if opened["info"].strip().split()[:1] == ["console"]:
            indent = opened["indent"]
            body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
            transcript = Transcript(page=page, line=i + 1, commands=[])
            for offset, text in enumerate(body):
                if text.startswith("$ "):
                    transcript.commands.append(Command(i + 2 + offset, text[2:]))
                elif not transcript.commands:
                    raise ValueError(f"{page}:{i + 2 + offset}: output before the first '$ '")
                else:
                    transcript.commands[-1].expected.append(text)
            _apply_directive(transcript, lines, i, page)
            found.append(transcript)
        i = end + 1
    return found


def _apply_directive(transcript: Transcript, lines: list[str], fence: int, page: str) -> None:
    above = fence - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    directive = _DIRECTIVE.match(lines[above]) if above >= 0 else None
    if directive is None:
        return
    kill = _KILL.match(directive["body"])
    if kill is None:
        raise ValueError(f"{page}:{above + 1}: bad transcript directive {directive['body']!r}")
    transcript.kill = True
    transcript.kill_after = kill["after"]
    transcript.kill_call_id = kill["call_id"]


def normalize(text: str) -> str:
    for pattern, placeholder in _NORMALIZE:
        text = pattern.sub(placeholder, text)
    return text.rstrip()


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in expected.split("...")]
    return re.compile(".*".join(parts) + r"\Z", re.DOTALL)


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether the output matches the page's, after normalizing, with ``...`` wildcards."""
    return match_lines([normalize(line) for line in expected], [normalize(x) for x in actual])


def match_lines(expected: list[str], actual: list[str]) -> bool:
    """Line by line, with ``...`` wildcards, trailing blank lines and spaces ignored."""
    want = [line.rstrip() for line in expected]
    got = [line.rstrip() for line in actual]
    while want and not want[-1]:
        want.pop()
    while got and not got[-1]:
        got.pop()
    return _match(want, got)


def _match(want: list[str], got: list[str]) -> bool:
    if not want:
        return not got
    head = want[0]
    if head == "...":
        return any(_match(want[1:], got[skip:]) for skip in range(len(got) + 1))
    if not got or _line_pattern(head).match(got[0]) is None:
        return False
    return _match(want[1:], got[1:])
