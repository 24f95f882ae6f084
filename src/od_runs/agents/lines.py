"""Lines from a child's pipes: read in large chunks, split into bounded, decoded lines.

A line longer than MAX_LINE_BYTES comes out in pieces (continuation events keep it whole in
the log); the JSON-lines adapters put the pieces back together with LineJoiner.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from contextlib import suppress

import anyio
from anyio.abc import ByteReceiveStream

from .pipes import PipeReader

READ_SIZE = 64 * 1024
# Longest piece of a line we hold; a longer line is split into continuation events.
MAX_LINE_BYTES = 64 * 1024

LineSink = Callable[[list[tuple[str, bool]]], None]


class LineSplitter:
    """Bytes in, decoded lines out; an over-long line comes out in bounded pieces.

    Invalid UTF-8 becomes U+FFFD. A character cut at a piece boundary is decoded whole,
    because the pieces of one line share an incremental decoder.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._rest = b""
        self._max = max_line
        # Pieces of the line in _rest already went out (the decoder may hold half a char).
        self._mid_line = False

    def feed(self, chunk: bytes) -> list[tuple[str, bool]]:
        """Return (text, partial) pairs; partial means the line goes on in the next piece."""
        data = self._rest + chunk if self._rest else chunk
        cut = data.rfind(b"\n")
        whole = data[:cut] if cut >= 0 else b""
        parts = whole.split(b"\n") if cut >= 0 else []
        if parts and not self._mid_line and max(map(len, parts)) <= self._max:
            # The common case, decoded in one call: no newline hides inside a UTF-8
            # sequence, so decoding the block and splitting it equals splitting then decoding.
            text = whole.decode("utf-8", "replace")
            lines = text.split("\n")
            if "\r" in text:
                lines = [line[:-1] if line.endswith("\r") else line for line in lines]
            out = [(line, False) for line in lines]
        else:
            out = []
            for part in parts:
                pieces = [part[i : i + self._max] for i in range(0, len(part), self._max)] or [b""]
                last = pieces.pop()
                out += [(self._decoder.decode(p), True) for p in pieces]
                if last.endswith(b"\r"):
                    last = last[:-1]
                out.append((self._decoder.decode(last, final=True), False))
                self._mid_line = False
        rest = data[cut + 1 :] if cut >= 0 else data
        while len(rest) > self._max:
            out.append((self._decoder.decode(rest[: self._max]), True))
            rest = rest[self._max :]
            self._mid_line = True
        self._rest = rest
        return out

    def finish(self) -> list[tuple[str, bool]]:
        """Flush a last line that had no newline."""
        rest, self._rest = self._rest, b""
        text = self._decoder.decode(rest, final=True)
        return [(text, False)] if text or rest else []


async def pump(stream: ByteReceiveStream, sink: LineSink) -> None:
    """Read a pipe to EOF in large chunks; hand each chunk's lines to sink as one batch.

    A child's own pipe (PipeReader) pushes its reads: the lines go to sink from the pipe's
    callback, with no task wake-up per read.
    """
    splitter = LineSplitter()

    def feed(chunk: bytes) -> None:
        lines = splitter.feed(chunk)
        if lines:
            sink(lines)

    try:
        if isinstance(stream, PipeReader):
            with suppress(anyio.ClosedResourceError):
                await stream.deliver_to(feed)
            return
        while True:
            try:
                chunk = await stream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                break
            feed(chunk)
    finally:
        last = splitter.finish()
        if last:
            sink(last)


# Longest JSON line an agent adapter reassembles from pieces before giving up on it.
MAX_JSON_LINE = 16 * 1024 * 1024
# What LineJoiner.feed returns for a line it skipped for being over MAX_JSON_LINE.
OVERLONG = object()


class LineJoiner:
    """Reassembles a line the reader delivered in bounded pieces; skips an absurd one."""

    def __init__(self, limit: int = MAX_JSON_LINE) -> None:
        self._limit = limit
        self._pending: list[str] = []
        self._size = 0
        self._dropping = False

    def feed(self, text: str, partial: bool) -> str | object | None:
        """The whole line once its last piece arrives, OVERLONG once, or None meanwhile."""
        if self._dropping:
            self._dropping = partial
            return None
        if not partial and not self._pending:
            return text
        self._pending.append(text)
        self._size += len(text)
        if self._size > self._limit:
            self._pending, self._size = [], 0
            self._dropping = partial
            return OVERLONG
        if partial:
            return None
        whole = "".join(self._pending)
        self._pending, self._size = [], 0
        return whole
