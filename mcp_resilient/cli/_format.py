"""Pure formatting for ``mcp-call``: MCP results into text for people or JSON for scripts.

Nothing here writes anywhere; ``_output`` does. Keeping the two apart lets the unit
tests check every format without a terminal or a server.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

import mcp_types
from pydantic import BaseModel

from mcp_resilient import STATELESS_VERSIONS, Event

__all__ = [
    "describe_event",
    "dump",
    "format_call_result",
    "format_info",
    "format_prompt_result",
    "format_prompts",
    "format_resources",
    "format_tool",
    "format_tools",
    "hints",
    "pretty_json",
    "progress_bar",
    "progress_line",
    "signature",
    "table",
]


def dump(model: BaseModel) -> Any:
    """A result as the server sent it: wire names, and only the fields it set."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _clip(text: str, width: int) -> str:
    if width <= 0 or len(text) <= width:
        return text
    return text[: max(0, width - 3)] + "..." if width > 3 else text[:width]


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None = None
) -> str:
    """Columns padded to fit; with ``width`` (a terminal) the last column is clipped to fit."""
    if not rows:
        return ""
    cells = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
    lines = []
    for row in cells:
        head = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1]))
        last = row[-1]
        if width is not None:
            last = _clip(last, width - len(head) - 2)
        lines.append(f"{head}  {last}".rstrip() if head else last)
    return "\n".join(lines)


def hints(annotations: mcp_types.ToolAnnotations | None) -> str:
    """A tool's behaviour hints in words, with the spec's defaults for unset ones."""
    if annotations is None:
        return "-"
    words: list[str] = []
    if annotations.read_only_hint:
        words.append("read-only")
    else:
        words.append("writes")
        if annotations.idempotent_hint:
            words.append("idempotent")
        if annotations.destructive_hint is not False:
            words.append("destructive")
    if annotations.open_world_hint is not False:
        words.append("open-world")
    return ", ".join(words)


def signature(schema: dict[str, Any] | None) -> str:
    """A tool's arguments from its input schema: required ones plain, optional ones with '?'."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, dict) or not properties:
        return "-"
    required = (schema or {}).get("required") or []
    return ", ".join(name if name in required else f"{name}?" for name in properties)


def format_tools(tools: Sequence[mcp_types.Tool], *, width: int | None = None) -> str:
    if not tools:
        return "(the server has no tools)"
    rows = [
        (
            tool.name,
            signature(tool.input_schema),
            hints(tool.annotations),
            _first_line(tool.description),
        )
        for tool in tools
    ]
    return table(("TOOL", "ARGUMENTS", "HINTS", "DESCRIPTION"), rows, width=width)


def format_tool(tool: mcp_types.Tool) -> str:
    """One tool in full: what an operator needs to call it."""
    lines = [f"tool         {tool.name}"]
    if tool.title:
        lines.append(f"title        {tool.title}")
    lines.append(f"hints        {hints(tool.annotations)}")
    lines.append(f"arguments    {signature(tool.input_schema)}")
    if tool.description:
        lines += ["", tool.description.strip()]
    lines += ["", "input schema:", pretty_json(tool.input_schema)]
    if tool.output_schema:
        lines += ["", "output schema:", pretty_json(tool.output_schema)]
    return "\n".join(lines)


def format_resources(
    resources: Sequence[mcp_types.Resource],
    templates: Sequence[mcp_types.ResourceTemplate],
    *,
    width: int | None = None,
) -> str:
    parts = []
    if resources:
        rows = [
            (str(r.uri), r.name, r.mime_type or "-", _first_line(r.description)) for r in resources
        ]
        parts.append(table(("URI", "NAME", "MIME", "DESCRIPTION"), rows, width=width))
    if templates:
        rows = [
            (t.uri_template, t.name, t.mime_type or "-", _first_line(t.description))
            for t in templates
        ]
        parts.append(table(("URI TEMPLATE", "NAME", "MIME", "DESCRIPTION"), rows, width=width))
    return "\n\n".join(parts) if parts else "(the server has no resources)"


def format_prompts(prompts: Sequence[mcp_types.Prompt], *, width: int | None = None) -> str:
    if not prompts:
        return "(the server has no prompts)"
    rows = []
    for prompt in prompts:
        args = ", ".join(a.name if a.required else f"{a.name}?" for a in (prompt.arguments or []))
        rows.append((prompt.name, args or "-", _first_line(prompt.description)))
    return table(("PROMPT", "ARGUMENTS", "DESCRIPTION"), rows, width=width)


def _describe_binary(kind: str, mime: str | None, data: str) -> str:
    try:
        size = f"{len(base64.b64decode(data, validate=True))} bytes"
    except (binascii.Error, ValueError):
        size = f"{len(data)} base64 characters"
    return f"[{kind} {mime or 'unknown type'}, {size}]"


def _resource_contents(contents: Any) -> str:
    if isinstance(contents, mcp_types.TextResourceContents):
        return contents.text
    if isinstance(contents, mcp_types.BlobResourceContents):
        return (
            _describe_binary("binary resource", contents.mime_type, contents.blob)
            + f" {contents.uri}"
        )
    return pretty_json(dump(contents)) if isinstance(contents, BaseModel) else str(contents)


def format_block(block: Any) -> str:
    """One content block as text: text as is, binaries described, links and resources named."""
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent):
        return _describe_binary("image", block.mime_type, block.data)
    if isinstance(block, mcp_types.AudioContent):
        return _describe_binary("audio", block.mime_type, block.data)
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link {block.uri}" + (f" ({block.name})" if block.name else "") + "]"
    if isinstance(block, mcp_types.EmbeddedResource):
        return _resource_contents(block.resource)
    return pretty_json(dump(block)) if isinstance(block, BaseModel) else str(block)


def _same_json(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False


def format_call_result(result: mcp_types.CallToolResult) -> str:
    """The tool's answer for a person.

    Structured content is shown as pretty JSON when the text says nothing more (no text,
    or text that is the same JSON); otherwise the text is what the tool meant people to
    read (e.g. ``5`` rather than a ``{"result": 5}`` wrapper).
    """
    texts = [b.text for b in result.content if isinstance(b, mcp_types.TextContent)]
    others = [b for b in result.content if not isinstance(b, mcp_types.TextContent)]
    structured = result.structured_content
    if (
        structured is not None
        and not others
        and (not texts or _same_json("".join(texts), structured))
    ):
        return pretty_json(structured)
    if not result.content:
        return "(no content)"
    return "\n".join(format_block(block) for block in result.content)


def format_read_result(result: mcp_types.ReadResourceResult) -> str:
    if not result.contents:
        return "(empty resource)"
    return "\n".join(_resource_contents(c) for c in result.contents)


def format_prompt_result(result: mcp_types.GetPromptResult) -> str:
    lines = []
    if result.description:
        lines += [f"# {result.description}", ""]
    for message in result.messages:
        lines.append(f"[{message.role}]")
        lines.append(format_block(message.content))
        lines.append("")
    return "\n".join(lines).rstrip() or "(no messages)"


def _capability_words(capabilities: dict[str, Any]) -> str:
    words = []
    for name, value in capabilities.items():
        flags = (
            [k for k, v in value.items() if v is True or (isinstance(v, dict) and k != "_meta")]
            if isinstance(value, dict)
            else []
        )
        words.append(f"{name} ({', '.join(flags)})" if flags else name)
    return ", ".join(words) or "none"


def format_info(info: dict[str, Any]) -> str:
    """The ``info`` document (see ``_commands.info``) as aligned lines."""
    server = info.get("serverInfo") or {}
    # The stateless era opens with server/discover and has no ping (the client discovers).
    stateless = info.get("protocolVersion") in STATELESS_VERSIONS
    opened_with, pinged_with = ("server/discover",) * 2 if stateless else ("initialize", "ping")
    rows = [
        ("server", f"{server.get('name', '?')} {server.get('version', '')}".strip()),
        ("endpoint", info.get("endpoint") or "-"),
        ("session", info.get("sessionId") or "(none: the server does not use sessions)"),
        ("protocol", info.get("protocolVersion") or "-"),
        ("capabilities", _capability_words(info.get("capabilities") or {})),
        ("connect", f"{info['connectMs']:.1f} ms ({opened_with})"),
        ("round trip", f"{info['roundTripMs']:.1f} ms ({pinged_with})"),
    ]
    if info.get("instructions"):
        rows.append(("instructions", _first_line(info["instructions"])))
    return "\n".join(f"{key:<13}{value}" for key, value in rows)


def progress_bar(progress: float, total: float | None, message: str | None, width: int) -> str:
    """One terminal line: a bar when the total is known, a counter when it is not."""
    note = f"  {message}" if message else ""
    if total and total > 0:
        fraction = min(1.0, max(0.0, progress / total))
        bar_width = 24
        filled = int(fraction * bar_width)
        line = f"[{'#' * filled}{'.' * (bar_width - filled)}] {fraction:4.0%} {_num(progress)}/{_num(total)}{note}"
    else:
        line = f"[{_num(progress)}]{note}"
    return _clip(line, max(10, width - 1))


def progress_line(progress: float, total: float | None, message: str | None) -> str:
    """A plain log line for a progress notification (stderr is not a terminal)."""
    amount = f"{_num(progress)}/{_num(total)}" if total else _num(progress)
    return f"progress {amount}" + (f" {message}" if message else "")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def describe_event(event: Event) -> str | None:
    """A client event as a note for people, or None for events only ``-v`` shows.

    Shown: what changes where or how the work runs (retries, failovers, lost and
    resumed sessions). ``outcome_unknown`` is left to the error line that follows it.
    """
    d = event.detail
    where = f" on {event.endpoint}" if event.endpoint else ""
    if event.kind == "retry":
        # The event names where the retry goes; `from_endpoint` is where it failed.
        failed_on = d.get("from_endpoint") or event.endpoint
        to = event.endpoint if event.endpoint and event.endpoint != failed_on else None
        return (
            f"retry: {d.get('method', 'request')} attempt {d.get('attempt', '?')} failed"
            f"{f' on {failed_on}' if failed_on else ''} ({d.get('error', 'no detail')});"
            f" retrying in {d.get('delay', '?')} s{f' on {to}' if to else ''}"
        )
    if event.kind == "failover":
        moved = f"from {d.get('from_endpoint', '?')} to {event.endpoint}"
        if event.session_id is None:
            return f"failover: requests moved {moved}"
        return f"failover: session moved {moved} (new session {event.session_id})"
    if event.kind == "session_lost":
        return (
            f"session {event.session_id} lost{where}"
            f" ({d.get('reason', '?')}: {d.get('error', 'no detail')})"
        )
    if event.kind == "session_resumed":
        return (
            f"resumed: state of session {d.get('old_session_id', '?')} carried over to"
            f" session {event.session_id}{where}"
        )
    if event.kind == "resume_failed":
        return (
            f"resume failed: state of session {d.get('old_session_id', '?')} was not carried"
            f" over ({d.get('error', 'no detail')})"
        )
    return None
