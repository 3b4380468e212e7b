"""The ``mcp-call`` grammar: ``mcp-call [options] URL [URL ...] COMMAND [ARGS] [options]``.

argparse cannot tell where a variable-length list of URLs ends and a sub-command
begins, so the command line is split by hand at the first positional word that is
not a URL; each half is then parsed by argparse into one namespace, which lets the
global options appear before or after the command.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

__all__ = [
    "COMMANDS",
    "EXIT_CODES",
    "Options",
    "UsageError",
    "parse_args",
    "parse_header",
    "parse_json_object",
    "parse_pairs",
    "split_argv",
]

PROG = "mcp-call"
URL_PREFIXES = ("http://", "https://")

EXIT_OK = 0
EXIT_TOOL_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_FAILED = 4
EXIT_OUTCOME_UNKNOWN = 5
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_TOOL_ERROR, "the tool answered with isError (call)"),
    (EXIT_USAGE, "usage error: bad option, argument, header or JSON"),
    (EXIT_UNREACHABLE, "could not reach any endpoint (refused, DNS, handshake timeout)"),
    (
        EXIT_FAILED,
        "protocol or server error (JSON-RPC error, HTTP error, bad response, no such tool, timeout of a safe call)",
    ),
    (
        EXIT_OUTCOME_UNKNOWN,
        "outcome unknown: a call not safe to repeat was sent, its answer lost (may have run)",
    ),
)

# Headers the client sets itself: letting -H override them would break the protocol.
_MANAGED_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "mcp-session-id", "mcp-protocol-version",
     "last-event-id", "host", "mcp-method", "mcp-name"}
)  # fmt: skip
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class UsageError(Exception):
    """A command line that cannot be run (exit code 2)."""

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


@dataclass(frozen=True, slots=True)
class Command:
    """One sub-command: its arguments, help text and examples."""

    name: str
    summary: str
    usage: str
    examples: tuple[str, ...]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


@dataclass(slots=True)
class Options:
    """Everything the command line asked for, validated."""

    urls: list[str]
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    retries: int | None = None
    no_resume: bool = False
    protocol_version: str | None = None
    json: bool = False
    verbose: int = 0
    name: str | None = None
    uri: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    idempotent: bool = False


def _add_call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the tool's name")
    parser.add_argument(
        "pairs",
        metavar="KEY=VALUE",
        nargs="*",
        help="a tool argument; VALUE is parsed as JSON when it parses, else taken as a string",
    )
    parser.add_argument(
        "--args",
        dest="args_json",
        metavar="JSON",
        help="all arguments as one JSON object; '-' reads it from stdin, '@FILE' from a file."
        " KEY=VALUE pairs are applied on top",
    )
    parser.add_argument(
        "--idempotent",
        action="store_true",
        help="the call may safely run twice: re-send it after an ambiguous failure"
        " (by default only tools annotated read-only or idempotent are re-sent)",
    )


def _add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the prompt's name")
    parser.add_argument(
        "pairs",
        metavar="KEY=VALUE",
        nargs="*",
        help="a prompt argument; prompt arguments are strings, so VALUE is taken as is",
    )
    parser.add_argument(
        "--args",
        dest="args_json",
        metavar="JSON",
        help="all arguments as one JSON object ('-' stdin, '@FILE' a file);"
        " non-string values are sent as JSON text",
    )


def _add_tools_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME", nargs="?", help="show one tool in full (schemas included)"
    )


def _add_read_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="the resource's URI")


def _add_login_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="the loopback port the browser returns to (default: 33418)",
    )


_URL = "http://127.0.0.1:8000/mcp"

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "info",
            "server name and version, protocol, capabilities, session, endpoint, round trip"
            " (the default command)",
            "URL [URL ...] info",
            (f"mcp-call {_URL}", f"mcp-call {_URL} http://127.0.0.1:8001/mcp info --json"),
        ),
        Command(
            "tools",
            "list the tools with their arguments and annotations, or show one tool",
            "URL [URL ...] tools [NAME]",
            (f"mcp-call {_URL} tools", f"mcp-call {_URL} tools add --json"),
            _add_tools_arguments,
        ),
        Command(
            "call",
            "call a tool; exit 1 if it answers with isError",
            "URL [URL ...] call NAME [KEY=VALUE ...] [--args JSON|-|@FILE]",
            (
                f"mcp-call {_URL} call add a=2 b=3",
                f"mcp-call {_URL} call add_note text='\"42\"'   # force a string",
                f'mcp-call {_URL} call search --args \'{{"query": "mcp", "limit": 5}}\'',
                f'echo \'{{"a": 2, "b": 3}}\' | mcp-call {_URL} call add --args -',
                f"mcp-call {_URL} http://127.0.0.1:8001/mcp call increment by=5 --json",
            ),
            _add_call_arguments,
        ),
        Command(
            "resources",
            "list the resources and resource templates",
            "URL [URL ...] resources",
            (f"mcp-call {_URL} resources",),
        ),
        Command(
            "read",
            "read a resource (a single binary resource goes raw to a non-terminal stdout)",
            "URL [URL ...] read URI",
            (
                f"mcp-call {_URL} read state://counter",
                f"mcp-call {_URL} read file:///logo.png > logo.png",
            ),
            _add_read_arguments,
        ),
        Command(
            "prompts",
            "list the prompts with their arguments",
            "URL [URL ...] prompts",
            (f"mcp-call {_URL} prompts",),
        ),
        Command(
            "prompt",
            "render a prompt with its arguments",
            "URL [URL ...] prompt NAME [KEY=VALUE ...] [--args JSON|-|@FILE]",
            (f"mcp-call {_URL} prompt greet name=Ada style=formal",),
            _add_prompt_arguments,
        ),
        Command(
            "ping",
            "check that the server answers, with the round-trip time",
            "URL [URL ...] ping",
            (f"mcp-call {_URL} ping",),
        ),
        Command(
            "login",
            "log in to an OAuth-protected server in the browser; later commands reuse the token",
            "URL [URL ...] login [--port PORT]",
            (f"mcp-call {_URL} login", f"mcp-call {_URL} login --port 8765"),
            _add_login_arguments,
        ),
    )
}
DEFAULT_COMMAND = "info"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ``UsageError`` (one exit path for all of them)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, command=getattr(self, "command_name", None))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


PROTOCOL_VERSIONS = ("auto", "2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26")
"""What ``--protocol-version`` takes: ``auto`` negotiates, a version pins it (either era)."""


def _protocol_version(text: str) -> str:
    if text not in PROTOCOL_VERSIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a protocol version this client speaks ({', '.join(PROTOCOL_VERSIONS)})"
        )
    return text


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _global_options() -> argparse.ArgumentParser:
    """The options every command takes (a parent parser, so they work on both sides)."""
    parser = _Parser(add_help=False)
    group = parser.add_argument_group("options (before or after the command)")
    group.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        metavar="'NAME: VALUE'",
        help="send this HTTP header (repeatable); sent only to the URLs given, never to a"
        " redirect target (redirects are not followed)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="deadline for the handshake and for each request (default: 60)",
    )
    group.add_argument(
        "--retries",
        type=_non_negative_int,
        metavar="N",
        help="after one attempt per URL, retry up to N more times (default: 2); a call"
        " that may have run is re-sent only if it is safe (read-only, idempotent)",
    )
    group.add_argument(
        "--no-resume",
        action="store_true",
        help="do not carry state to a new session after failover (no resume_session call)",
    )
    group.add_argument(
        "--protocol-version",
        metavar="VERSION",
        type=_protocol_version,
        help="auto (default: try 2026-07-28, fall back to the initialize handshake), or pin"
        " one: 2026-07-28 (stateless), 2025-11-25, 2025-06-18, 2025-03-26",
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="machine output: one JSON document on stdout, nothing else there",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="trace each HTTP exchange on stderr (-vv: also message bodies); tracebacks on errors",
    )
    return parser


_GLOBAL = _global_options()


def _value_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """Option strings that consume the next word (so it is not taken for a URL or command)."""
    return frozenset(
        option
        for action in parser._actions
        if action.nargs != 0 and action.option_strings
        for option in action.option_strings
    )


_VALUE_OPTIONS = _value_options(_GLOBAL)


def _exit_code_text() -> str:
    return "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES)


def _main_parser() -> _Parser:
    commands = "\n".join(f"  {c.name:<10} {c.summary}" for c in COMMANDS.values())
    epilog = (
        f"commands:\n{commands}\n\n"
        "URLs come first and must start with http:// or https://; give several for failover.\n"
        f"'mcp-call COMMAND --help' shows a command's arguments and examples.\n\n"
        f"examples:\n  mcp-call {_URL}\n  mcp-call {_URL} tools\n"
        f"  mcp-call {_URL} call add a=2 b=3\n"
        f"  mcp-call {_URL} http://127.0.0.1:8001/mcp -v call increment\n\n"
        f"exit codes:\n{_exit_code_text()}"
    )
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [options] URL [URL ...] COMMAND [ARGS]",
        description="Probe and call a remote MCP server over Streamable HTTP.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_GLOBAL],
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def command_parser(name: str) -> _Parser:
    """The parser for one command (its own arguments plus the global options)."""
    command = COMMANDS[name]
    examples = "\n".join(f"  {line}" for line in command.examples)
    parser = _Parser(
        prog=f"{PROG} URL [URL ...] {name}",
        usage=f"{PROG} [options] {command.usage}",
        description=command.summary[0].upper() + command.summary[1:] + ".",
        epilog=f"examples:\n{examples}\n\nexit codes:\n{_exit_code_text()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_GLOBAL],
    )
    parser.command_name = name  # type: ignore[attr-defined]
    command.add_arguments(parser)
    return parser


def main_help() -> str:
    return _main_parser().format_help()


def command_help(name: str) -> str:
    return command_parser(name).format_help()


@dataclass(slots=True)
class Split:
    """``argv`` cut at the command word."""

    before: list[str]
    urls: list[str]
    command: str | None
    after: list[str]


def split_argv(argv: Sequence[str]) -> Split:
    """Cut ``argv`` at the first positional word that is not a URL."""
    before: list[str] = []
    urls: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            # Everything after '--' is positional: URLs, then the command.
            rest = argv[i + 1 :]
            while rest and rest[0].startswith(URL_PREFIXES):
                urls.append(rest[0])
                rest = rest[1:]
            if rest:
                return Split(before, urls, rest[0], list(rest[1:]))
            return Split(before, urls, None, [])
        if word.startswith("-") and word != "-":
            before.append(word)
            if word in _VALUE_OPTIONS and i + 1 < len(argv):
                before.append(argv[i + 1])
                i += 1
            i += 1
            continue
        if word.startswith(URL_PREFIXES):
            urls.append(word)
            i += 1
            continue
        return Split(before, urls, word, list(argv[i + 1 :]))
    return Split(before, urls, None, [])


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` into a name and value; refuse what would corrupt the request."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise UsageError(f"header {text!r} is not 'Name: value'")
    if not _TOKEN.match(name):
        raise UsageError(f"header name {name!r} has characters a header name cannot have")
    if any(ch in value for ch in "\r\n\0"):
        raise UsageError(f"header {name!r} has a line break in its value")
    if name.lower() in _MANAGED_HEADERS:
        raise UsageError(f"header {name!r} is set by the client itself and cannot be given")
    return name, value


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _json_or_string(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw


def parse_pairs(pairs: Sequence[str], *, json_values: bool = True) -> dict[str, Any]:
    """``KEY=VALUE`` words into a dict; values are JSON when they parse (if ``json_values``)."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(
                f"argument {pair!r} is not KEY=VALUE (write {pair}=VALUE, or use --args JSON)"
            )
        if key in parsed:
            raise UsageError(f"argument {key!r} is given twice")
        parsed[key] = _json_or_string(raw) if json_values else raw
    return parsed


def parse_json_object(text: str, *, stdin: IO[str] | None = None) -> dict[str, Any]:
    """The ``--args`` value: JSON text, ``-`` for stdin or ``@FILE``; must be an object."""
    source = "--args"
    if text == "-":
        source = "--args - (stdin)"
        text = (stdin or sys.stdin).read()
    elif text.startswith("@"):
        path = Path(text[1:])
        source = f"--args @{path}"
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"{source}: cannot read the file ({exc.strerror or exc})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{source} must be a JSON object, not {type(value).__name__}")
    return value


def _command_arguments(
    options: Options, namespace: argparse.Namespace, stdin: IO[str] | None
) -> None:
    command = options.command
    if command in ("call", "prompt"):
        options.name = namespace.name
        base = (
            parse_json_object(namespace.args_json, stdin=stdin)
            if namespace.args_json is not None
            else {}
        )
        pairs = parse_pairs(namespace.pairs, json_values=command == "call")
        merged = {**base, **pairs}
        options.arguments = (
            merged if command == "call" else {k: _prompt_value(v) for k, v in merged.items()}
        )
        options.idempotent = bool(getattr(namespace, "idempotent", False))
    elif command == "tools":
        options.name = namespace.name
    elif command == "read":
        options.uri = namespace.uri
    elif command == "login":
        options.arguments = {"port": namespace.port}


def _prompt_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _wants_help(words: Sequence[str]) -> bool:
    return any(word in ("-h", "--help") for word in words)


@dataclass(slots=True)
class HelpRequest:
    """The user asked for help or the version: print ``text`` and exit 0."""

    text: str


def parse_args(argv: Sequence[str], *, stdin: IO[str] | None = None) -> Options | HelpRequest:
    """The command line as ``Options``, or a ``HelpRequest``; raises ``UsageError``."""
    split = split_argv(argv)
    command = split.command
    if command == "help":
        topic = split.after[0] if split.after else None
        if topic in COMMANDS:
            return HelpRequest(command_help(topic))
        if topic is not None:
            raise UsageError(f"no command {topic!r} (commands: {', '.join(COMMANDS)})")
        return HelpRequest(main_help())
    if command is not None and command not in COMMANDS:
        hint = (
            "URLs must start with http:// or https://"
            if "/" in command or ":" in command
            else f"commands: {', '.join(COMMANDS)}"
        )
        raise UsageError(f"unknown command {command!r} ({hint})")
    if command is not None and _wants_help(split.after):
        return HelpRequest(command_help(command))
    if _wants_help(split.before):
        return HelpRequest(command_help(command) if command else main_help())
    if "--version" in split.before:
        from .. import __version__

        return HelpRequest(f"{PROG} (mcp-resilient) {__version__}\n")

    if command is None and not split.urls:
        raise UsageError(f"no server URL given: {PROG} URL [URL ...] COMMAND")
    namespace = argparse.Namespace()
    _GLOBAL.parse_args(split.before, namespace=namespace)
    command = command or DEFAULT_COMMAND
    parser = command_parser(command)
    parser.parse_intermixed_args(split.after, namespace=namespace)

    stray = [word for word in split.after if word.startswith(URL_PREFIXES)]
    if not split.urls:
        if stray and command not in ("read",):
            raise UsageError(
                f"URLs go before the command: {PROG} {stray[0]} {command} ...", command=command
            )
        raise UsageError(f"no server URL given: {PROG} URL [URL ...] {command}", command=command)

    headers: dict[str, str] = {}
    for text in namespace.headers or []:
        name, value = parse_header(text)
        # Repeating a header replaces it (case-insensitively): the last one wins.
        for existing in [k for k in headers if k.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value

    options = Options(
        urls=list(dict.fromkeys(split.urls)),
        command=command,
        headers=headers,
        timeout=namespace.timeout,
        retries=namespace.retries,
        no_resume=namespace.no_resume,
        protocol_version=namespace.protocol_version,
        json=namespace.json,
        verbose=namespace.verbose or 0,
    )
    try:
        _command_arguments(options, namespace, stdin)
    except UsageError as exc:
        raise UsageError(str(exc), command=command) from None
    return options
