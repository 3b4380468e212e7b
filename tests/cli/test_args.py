"""The ``mcp-call`` grammar, in process: splitting, options on either side, arguments, help."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mcp_resilient.cli import main
from mcp_resilient.cli._args import (
    COMMANDS,
    HelpRequest,
    Options,
    UsageError,
    parse_args,
    parse_header,
    parse_json_object,
    parse_pairs,
    split_argv,
)

URL = "http://127.0.0.1:8000/mcp"
URL2 = "https://mcp.example/mcp"


def options(*argv: str, stdin: str = "") -> Options:
    parsed = parse_args(list(argv), stdin=io.StringIO(stdin))
    assert isinstance(parsed, Options), parsed
    return parsed


def usage_error(*argv: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse_args(list(argv), stdin=io.StringIO(""))
    return info.value


def test_split_at_first_word_that_is_not_a_url() -> None:
    split = split_argv(["-H", "X-A: 1", URL, "--timeout", "5", URL2, "call", "add", "a=1", "-v"])
    assert split.urls == [URL, URL2]
    assert split.before == ["-H", "X-A: 1", "--timeout", "5"]
    assert split.command == "call"
    assert split.after == ["add", "a=1", "-v"]


def test_option_values_are_not_taken_for_urls_or_commands() -> None:
    split = split_argv(["--protocol-version", "2025-06-18", URL, "ping"])
    assert split.urls == [URL]
    assert split.command == "ping"


def test_double_dash_ends_options() -> None:
    split = split_argv(["--json", "--", URL, "tools"])
    assert (split.before, split.urls, split.command) == (["--json"], [URL], "tools")


def test_global_options_work_before_and_after_the_command() -> None:
    before = options("--json", "-v", "--timeout", "5", URL, "ping")
    after = options(URL, "ping", "--json", "-v", "--timeout", "5")
    for parsed in (before, after):
        assert (parsed.json, parsed.verbose, parsed.timeout, parsed.command) == (
            True,
            1,
            5.0,
            "ping",
        )


def test_headers_accumulate_across_both_sides() -> None:
    parsed = options("-H", "Authorization: Bearer a", URL, "ping", "--header", "X-Trace: 7")
    assert parsed.headers == {"Authorization": "Bearer a", "X-Trace": "7"}


def test_repeated_header_last_one_wins_case_insensitively() -> None:
    parsed = options(URL, "ping", "-H", "x-a: 1", "-H", "X-A: 2")
    assert parsed.headers == {"X-A": "2"}


def test_several_urls_in_order_without_duplicates() -> None:
    assert options(URL, URL2, URL, "info").urls == [URL, URL2]


def test_default_command_is_info() -> None:
    assert options(URL).command == "info"


def test_call_pairs_are_json_when_they_parse() -> None:
    parsed = options(
        URL, "call", "t", "n=5", "f=2.5", "b=true", "z=null", "s=hello", 'q="5"', 'o={"k": [1]}'
    )
    assert parsed.name == "t"
    assert parsed.arguments == {
        "n": 5,
        "f": 2.5,
        "b": True,
        "z": None,
        "s": "hello",
        "q": "5",
        "o": {"k": [1]},
    }


def test_values_that_are_not_json_stay_strings() -> None:
    parsed = parse_pairs(
        ["lead=007", "empty=", "nan=NaN", "inf=Infinity", "eq=a=b", "url=http://x"]
    )
    assert parsed == {
        "lead": "007",
        "empty": "",
        "nan": "NaN",
        "inf": "Infinity",
        "eq": "a=b",
        "url": "http://x",
    }


def test_options_mix_with_pairs() -> None:
    parsed = options(URL, "call", "add", "a=1", "--json", "b=2", "--idempotent")
    assert parsed.arguments == {"a": 1, "b": 2}
    assert parsed.json and parsed.idempotent


def test_args_json_with_pairs_on_top() -> None:
    parsed = options(URL, "call", "add", "--args", '{"a": 1, "b": 2}', "b=3")
    assert parsed.arguments == {"a": 1, "b": 3}


def test_args_from_stdin() -> None:
    parsed = options(URL, "call", "add", "--args", "-", stdin='{"a": 1, "b": 2}')
    assert parsed.arguments == {"a": 1, "b": 2}


def test_args_from_file(tmp_path: Path) -> None:
    path = tmp_path / "args.json"
    path.write_text('{"text": "from a file"}')
    assert options(URL, "call", "add_note", "--args", f"@{path}").arguments == {
        "text": "from a file"
    }


def test_prompt_arguments_are_strings() -> None:
    parsed = options(URL, "prompt", "greet", "name=5", "--args", '{"style": {"x": 1}}')
    assert parsed.arguments == {"name": "5", "style": '{"x": 1}'}


def test_tools_name_and_read_uri() -> None:
    assert options(URL, "tools", "add").name == "add"
    assert options(URL, "tools").name is None
    assert options(URL, "read", "https://example.com/doc").uri == "https://example.com/doc"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ((URL, "call", "add", "a"), "is not KEY=VALUE"),
        ((URL, "call", "add", "=1"), "is not KEY=VALUE"),
        ((URL, "call", "add", "a=1", "a=2"), "given twice"),
        ((URL, "call", "add", "--args", "{bad"), "not valid JSON"),
        ((URL, "call", "add", "--args", "[1]"), "must be a JSON object"),
        ((URL, "call"), "required: NAME"),
        ((URL, "read"), "required: URI"),
        ((URL, "ping", "extra"), "unrecognized arguments: extra"),
        ((URL, "ping", "--timeout", "0"), "must be a positive number"),
        ((URL, "ping", "--timeout", "soon"), "is not a number"),
        ((URL, "ping", "--retries", "-1"), "must be 0 or more"),
        ((URL, "frobnicate"), "unknown command 'frobnicate'"),
        (("localhost:8000/mcp", "ping"), "must start with http:// or https://"),
        (("ping",), "no server URL given"),
        (("tools", URL), "URLs go before the command"),
        ((URL, "ping", "-H", "no colon"), "is not 'Name: value'"),
    ],
)
def test_usage_errors(argv: tuple[str, ...], fragment: str) -> None:
    assert fragment in str(usage_error(*argv))


def test_no_arguments_at_all() -> None:
    error = usage_error()
    assert str(error) == "no server URL given: mcp-call URL [URL ...] COMMAND"
    assert error.command is None


def test_usage_error_names_the_command_for_help() -> None:
    assert usage_error(URL, "call", "add", "a").command == "call"


@pytest.mark.parametrize(
    "header",
    ["Mcp-Session-Id: x", "mcp-protocol-version: 2025-06-18", "Accept: */*", "Content-Type: a/b"],
)
def test_protocol_headers_cannot_be_overridden(header: str) -> None:
    with pytest.raises(UsageError, match="set by the client itself"):
        parse_header(header)


def test_header_parsing() -> None:
    assert parse_header("Authorization:  Bearer abc ") == ("Authorization", "Bearer abc")
    assert parse_header("X-Empty:") == ("X-Empty", "")
    with pytest.raises(UsageError, match="cannot have"):
        parse_header("Bad Name: x")


def test_json_object_from_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the file"):
        parse_json_object(f"@{tmp_path / 'nope.json'}")


def test_help_requests() -> None:
    for argv in (["--help"], ["-h"], [URL, "--help"], ["help"]):
        parsed = parse_args(argv)
        assert isinstance(parsed, HelpRequest)
        assert "exit codes:" in parsed.text and "commands:" in parsed.text
    for name in COMMANDS:
        for argv in ([name, "--help"], [URL, name, "-h"], ["help", name]):
            parsed = parse_args(argv)
            assert isinstance(parsed, HelpRequest)
            assert "examples:" in parsed.text and f"mcp-call {URL}" in parsed.text


def test_main_help_exits_0_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--help"]) == 0
    captured = capsys.readouterr()
    assert "call NAME [KEY=VALUE ...]" in captured.out
    assert captured.err == ""


def test_main_usage_error_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([URL, "call", "add", "a"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("mcp-call: error: argument 'a' is not KEY=VALUE")
    assert "mcp-call call --help" in captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("mcp-call (mcp-resilient) ")
