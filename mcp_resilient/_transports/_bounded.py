"""Bounded reading of HTTP bodies: decompression step by step, and a size cap on the result.

Shared by the MCP wire (``_http``) and the OAuth client (``auth``), so that every body we
read from a server is capped after decompression, not only on the wire.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import httpx

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_CODINGS",
    "BodyError",
    "BodyTooLargeError",
    "Inflater",
    "inflate",
    "read_bounded",
    "stages_for",
]

ACCEPT_ENCODING = "gzip, deflate"
"""The codings we undo ourselves, with a bound on the output; anything else is refused."""
MAX_CODINGS = 3  # "gzip, gzip, ..." stacked deeper than this is refused
INFLATE_PIECE = 64 * 1024  # most bytes one decompression step may produce


class BodyError(ValueError):
    """A body we will not read: unknown or too deep Content-Encoding, or corrupt data."""


class BodyTooLargeError(BodyError):
    """The body (after decompression) is larger than the reader's cap."""


class Inflater:
    """Undoes one gzip or deflate coding step by step, never more than a piece at a time.

    httpx would inflate a whole network read at once, so a few kilobytes could become
    gigabytes before any size cap is checked; here the consumer sees bounded pieces and
    stops pulling once its cap is passed.
    """

    __slots__ = ("_head", "_inflater", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._head = b""  # deflate: the first bytes, until we know zlib-wrapped or raw
        self._inflater: Any = None if name == "deflate" else zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        inflater = self._inflater
        if inflater is None:
            # "deflate" is meant to be zlib-wrapped, but servers often send raw deflate.
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = b""
            cmf, flg = data[0], data[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            inflater = self._inflater = zlib.decompressobj(
                zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            )
        while True:
            out = inflater.decompress(data, INFLATE_PIECE)
            if inflater.eof:  # anything after the end of the compressed data is ignored
                if out:
                    yield out
                return
            data = inflater.unconsumed_tail
            if out:
                yield out
            if not data and len(out) < INFLATE_PIECE:
                return


def inflate(stages: list[Inflater], data: bytes, at: int = 0) -> Iterator[bytes]:
    """``data`` through ``stages[at:]``, piece by piece."""
    last = at + 1 == len(stages)
    for piece in stages[at].feed(data):
        if last:
            yield piece
        else:
            yield from inflate(stages, piece, at + 1)


def stages_for(content_encoding: str | None) -> list[Inflater]:
    """The decoders for a Content-Encoding header, in the order to apply them.

    Raises ``BodyError`` for a coding we did not ask for, or codings stacked too deep.
    """
    if not content_encoding:
        return []
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    unknown = [c for c in codings if c not in ("gzip", "x-gzip", "deflate")]
    if unknown or len(codings) > MAX_CODINGS:
        raise BodyError(
            f"Content-Encoding {content_encoding[:100]!r} was not asked for"
            f" (Accept-Encoding: {ACCEPT_ENCODING})"
        )
    return [Inflater("deflate" if c == "deflate" else "gzip") for c in reversed(codings)]


async def read_bounded(response: httpx.Response, cap: int) -> bytes:
    """A streamed response's body, decompressed by us, at most ``cap`` bytes; closes it.

    Raises ``BodyTooLargeError`` as soon as the body (compressed or not) passes ``cap``,
    ``BodyError`` for an unknown coding or corrupt compressed data.
    """
    try:
        if response.is_stream_consumed:
            # A body given whole (httpx.MockTransport, respx) was read and decoded already.
            content = response.content
            if len(content) > cap:
                raise BodyTooLargeError(f"the body exceeds the {cap}-byte cap")
            return content
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and len(length) < 20 and int(length) > cap:
            raise BodyTooLargeError(f"the body of {length} bytes exceeds the {cap}-byte cap")
        stages = stages_for(response.headers.get("content-encoding"))
        chunks: list[bytes] = []
        size = 0
        async for raw in response.aiter_raw():
            size_raw = len(raw)
            pieces = inflate(stages, raw) if stages else iter((raw,) if size_raw else ())
            for piece in pieces:
                size += len(piece)
                if size > cap:
                    raise BodyTooLargeError(f"the body exceeds the {cap}-byte cap")
                chunks.append(piece)
        return b"".join(chunks)
    except zlib.error as exc:
        raise BodyError(f"the body is not valid compressed data ({exc})") from None
    finally:
        await response.aclose()
