"""Per-run event log: single-writer JSONL append and indexed replay from any cursor.

A line is `{"id":N,"event":"name","data":...,"ts":"..."}` with exactly that key order, so
a reader learns the id and the event name from the line's prefix without parsing JSON.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import BinaryIO

from .encoding import compact_json
from .frame_spans import SLICE_BYTES, SPAN_KEYS, SPAN_MAX_BYTES, Span, slice_spans, span_cache

LOG_NAME = "events.jsonl"
DIR_MODE = 0o700
FILE_MODE = 0o600
# One index entry per this many events: 1M events cost ~4k ints of memory.
INDEX_EVERY = 256
READ_CHUNK = 256 * 1024
_PREFIX = b'{"id":'
# A whole log line and the SSE frame it becomes; lines hold no raw newline (JSON escapes it).
_LINE_RE = re.compile(rb'^(\{"id":(\d+),"event":"([^"]*)".*)$', re.MULTILINE)


def _frames(data: bytes) -> bytes:
    """SSE frames of whole log lines: one C-level scan, then one format per line."""
    return b"".join(
        [b"id: %b\nevent: %b\ndata: %b\n\n" % (i, e, line) for line, i, e in _LINE_RE.findall(data)]
    )


class RawJSON(str):
    """Event data that is already one serialised JSON value; written as is."""


class LogCorrupt(Exception):
    """A line of events.jsonl does not start the way this module writes lines."""


class LogLine:
    """One serialised event: its id, its name and its JSON line without the newline."""

    __slots__ = ("event", "id", "line")

    def __init__(self, event_id: int, event: str, line: bytes) -> None:
        self.id = event_id
        self.event = event
        self.line = line

    @property
    def frame(self) -> bytes:
        """The SSE frame of this event (live readers share a batch's frames, built once)."""
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.id, self.event.encode(), self.line)


def parse_prefix(line: bytes) -> tuple[int, str]:
    """Read the id and event name from the start of a line we wrote."""
    if not line.startswith(_PREFIX):
        raise LogCorrupt(f"unexpected line start: {line[:40]!r}")
    comma = line.index(b",", 6)
    event_start = comma + 10  # len(',"event":"')
    event_end = line.index(b'"', event_start)
    return int(line[6:comma]), line[event_start:event_end].decode()


def to_log_line(raw: bytes) -> LogLine:
    """Wrap a raw line read from disk."""
    event_id, event = parse_prefix(raw)
    return LogLine(event_id, event, raw)


def _dumps(value: object) -> str:
    if isinstance(value, RawJSON):
        return value
    return compact_json(value)


def encode_lines(
    first_id: int, items: Sequence[tuple[str, object]], ts: str, scrub: Callable[[str], str]
) -> tuple[bytes, list[LogLine], list[int]]:
    """Serialise events once: the bytes to write, the lines to publish, each line's length.

    scrub runs over the whole batch in one pass; it never sees or makes a newline.
    """
    end = f',"ts":"{ts}"}}'
    text = "\n".join(
        [
            f'{{"id":{event_id},"event":"{event}","data":'
            f"{data if data.__class__ is RawJSON else _dumps(data)}{end}"
            for event_id, (event, data) in zip(count(first_id), items, strict=False)
        ]
    )
    raw = scrub(text).encode("utf-8", "replace") + b"\n"
    parts = raw.split(b"\n")
    parts.pop()
    lines = [
        LogLine(event_id, event, part)
        for event_id, (event, _), part in zip(count(first_id), items, parts, strict=False)
    ]
    return raw, lines, [len(p) + 1 for p in parts]


def ensure_private_dir(path: Path) -> None:
    """Create a directory (and parents) readable by the owner only."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


class EventLog:
    """One run's events.jsonl: the single writer while the run is active, a reader always."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._size = 0
        # _index[k] is the byte offset of the line with id k * INDEX_EVERY + 1.
        self._index: list[int] = []
        self._indexed_upto = 0
        self._span_key = next(SPAN_KEYS)
        # The file as frame_slice() reads it, opened at its first slice and held while this
        # object lives: a reader replaying a run that is deleted meanwhile finishes what it
        # began (the unlinked file stays readable), with no gap before its `end`.
        self._reader: int | None = None

    @classmethod
    def create(cls, run_dir: Path) -> EventLog:
        """Create the run's directory and an empty log, both private."""
        ensure_private_dir(run_dir)
        log = cls(run_dir / LOG_NAME)
        log._fd = os.open(
            log.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE
        )
        log._size = os.fstat(log._fd).st_size
        return log

    @property
    def writable(self) -> bool:
        """True until close()."""
        return self._fd is not None

    def append(self, first_id: int, data: bytes, lengths: list[int]) -> None:
        """Append whole lines (data ends with a newline) in one write, then index them.

        A synchronous os.write: it hits the page cache in microseconds, and doing it inline
        is what makes write-before-publish (invariant 3) hold without any locking.
        """
        if self._fd is None:
            raise OSError(errno.EBADF, "event log is closed", str(self.path))
        view = memoryview(data)
        try:
            while view:
                # A regular file takes the whole buffer at once; the loop covers signals.
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # A full disk can take part of a batch: cut it so the log keeps whole lines.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        offset = self._size
        next_indexed = len(self._index) * INDEX_EVERY + 1
        event_id = first_id
        for length in lengths:
            if event_id == next_indexed:
                self._index.append(offset)
                next_indexed += INDEX_EVERY
            offset += length
            event_id += 1
        self._indexed_upto = event_id - 1
        self._size = offset

    def append_batch(
        self, first_id: int, raw: bytes, lines: list[LogLine], lengths: list[int]
    ) -> None:
        """The storage.RunLog form of append(): the file takes the bytes."""
        self.append(first_id, raw, lengths)

    def last(self) -> LogLine | None:
        """The newest whole line of the log, read from its end."""
        return last_line(self.path)

    def close(self) -> None:
        """Close the writer; idempotent. Reading stays possible."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    # Reading -----------------------------------------------------------------------------

    def frame_slice(
        self, cursor: int, upto: int, budget: int = SLICE_BYTES
    ) -> tuple[bytes, int, str] | None:
        """SSE frames of the next events after cursor (up to upto, about budget bytes), from
        spans framed once for every reader; None where this log cannot serve them so.

        Call it on the event loop of the writer: it reads what this process wrote (page
        cache, no waiting on the disk) through the writer's own index. A log opened only
        for reading has no index and answers None: use read_frames_after off the loop.
        """
        if upto > self._indexed_upto:
            return None
        return slice_spans(cursor, upto, budget, self._span, INDEX_EVERY)

    def _span(self, k: int, need: int) -> Span | None:
        """Span k framed through at least event need, from the cache or the file."""
        key = (self._span_key, k)
        span = span_cache.get(key)
        if span is not None and span.last_id >= need:
            return span
        if k >= len(self._index):
            return None
        start = self._index[k]
        end = self._index[k + 1] if k + 1 < len(self._index) else self._size
        if end - start > SPAN_MAX_BYTES:
            return None
        offset = span.end_offset if span is not None else start
        if self._reader is None:
            try:
                self._reader = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # deleted before any slice: the reader finds nothing
                return None
            weakref.finalize(self, os.close, self._reader)
        data = os.pread(self._reader, end - offset, offset)
        data = data[: data.rfind(b"\n") + 1]
        if not data:
            return span
        last_id, last_event = _last_prefix(data)
        frames = _frames(data) if span is None else span.frames + _frames(data)
        grown = Span(k * INDEX_EVERY + 1, last_id, last_event, frames, offset + len(data))
        span_cache.put(key, grown)
        return grown

    def read_after(self, cursor: int, upto: int | None = None) -> Iterator[list[LogLine]]:
        """Yield batches of lines with cursor < id <= upto (blocking: run it in a thread)."""
        for data in self._whole_lines(cursor):
            batch: list[LogLine] = []
            for raw in data.split(b"\n"):
                if not raw:
                    continue
                item = to_log_line(raw)
                if item.id <= cursor:
                    continue
                if upto is not None and item.id > upto:
                    if batch:
                        yield batch
                    return
                batch.append(item)
            if batch:
                yield batch

    def read_frames_after(
        self, cursor: int, upto: int | None = None
    ) -> Iterator[tuple[bytes, int, str]]:
        """Yield (SSE frames, last id, last event name) for cursor < id <= upto, in chunks.

        Replay to many readers is the hot path, so whole chunks become frames in one regex
        pass instead of one Python object per line.
        """
        for whole in self._whole_lines(cursor):
            data = _skip_through(whole, cursor)
            if not data:
                continue
            last_id, last_event = _last_prefix(data)
            if upto is not None and last_id > upto:
                data = _cut_after(data, upto)
                if data:
                    yield _frames(data), *_last_prefix(data)
                return
            yield _frames(data), last_id, last_event

    def _whole_lines(self, cursor: int) -> Iterator[bytes]:
        """The log from a line at or before cursor + 1 on, in chunks of whole lines (an
        unfinished last line is left for the writer to finish)."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed in finally, generator
        except FileNotFoundError:
            return
        try:
            fh.seek(self._start_offset(fh, cursor))
            rest = b""
            while chunk := fh.read(READ_CHUNK):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                if data:
                    yield data
        finally:
            fh.close()

    def _start_offset(self, fh: object, cursor: int) -> int:
        """A byte offset at or before the line with id cursor + 1."""
        wanted = cursor + 1
        if wanted <= 1:
            return 0
        if self._index and wanted <= self._indexed_upto + 1:
            slot = min((wanted - 1) // INDEX_EVERY, len(self._index) - 1)
            return self._index[slot]
        return _bisect_offset(self.path, wanted)


def _last_prefix(data: bytes) -> tuple[int, str]:
    """Id and event of the last line of whole lines."""
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    return parse_prefix(data[start:])


def _skip_through(data: bytes, cursor: int) -> bytes:
    """data from the first line whose id is above cursor (whole lines in, whole lines out)."""
    pos = 0
    while pos < len(data) and parse_prefix(data[pos : pos + 128])[0] <= cursor:
        pos = data.index(b"\n", pos) + 1
    return data[pos:]


def _cut_after(data: bytes, upto: int) -> bytes:
    """data up to and including the line with id upto."""
    end = len(data)
    while end > 0:
        start = data.rfind(b"\n", 0, end - 1) + 1
        if parse_prefix(data[start : start + 128])[0] <= upto:
            return data[:end]
        end = start
    return b""


def _line_at(fh: BinaryIO, offset: int) -> tuple[int, int] | None:
    """The (id, start offset) of the first whole line starting at or after offset."""
    fh.seek(offset)
    if offset > 0:
        fh.readline()  # skip the rest of the line offset fell into
    start = fh.tell()
    raw = fh.readline()
    if not raw.endswith(b"\n"):
        return None
    return parse_prefix(raw)[0], start


def _bisect_offset(path: Path, wanted: int) -> int:
    """Binary-search a log not indexed by this process (written before a restart)."""
    with open(path, "rb") as fh:
        lo, hi = 0, os.fstat(fh.fileno()).st_size
        best = 0
        while lo < hi:
            mid = (lo + hi) // 2
            found = _line_at(fh, mid)
            if found is None or found[0] >= wanted:
                hi = mid
            else:
                best = found[1]
                lo = mid + 1
        return best


def recover_tail(path: Path) -> LogLine | None:
    """Cut a torn last line left by a crash and return the last whole line, if any."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        pos = size
        tail = b""
        while pos > 0:
            step = min(READ_CHUNK, pos)
            pos -= step
            tail = os.pread(fd, step, pos) + tail
            if tail.count(b"\n") >= 2 or pos == 0:
                break
        cut = tail.rfind(b"\n")
        if cut == -1:
            os.ftruncate(fd, 0)
            return None
        if cut != len(tail) - 1:
            os.ftruncate(fd, pos + cut + 1)
        tail = tail[: cut + 1]
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        return to_log_line(lines[-1])
    finally:
        os.close(fd)


class MemoryLog:
    """The log of a daemon run without a data dir: the same interface, nothing on disk."""

    path: Path | None = None

    def __init__(self) -> None:
        self._lines: list[LogLine] = []
        self.writable = True
        self._span_key = next(SPAN_KEYS)

    def append_lines(self, lines: list[LogLine]) -> None:
        """Keep the lines; ids are dense and start at 1, so position is id - 1."""
        self._lines.extend(lines)

    def append_batch(
        self, first_id: int, raw: bytes, lines: list[LogLine], lengths: list[int]
    ) -> None:
        """The storage.RunLog form of append_lines(): memory keeps the parsed lines."""
        self._lines.extend(lines)

    def last(self) -> LogLine | None:
        """The newest line, or None."""
        return self._lines[-1] if self._lines else None

    def close(self) -> None:
        """Nothing to release; kept for symmetry with EventLog."""
        self.writable = False

    def frame_slice(
        self, cursor: int, upto: int, budget: int = SLICE_BYTES
    ) -> tuple[bytes, int, str] | None:
        """The same as EventLog.frame_slice, from memory."""
        return slice_spans(cursor, min(upto, len(self._lines)), budget, self._span, INDEX_EVERY)

    def _span(self, k: int, need: int) -> Span | None:
        key = (self._span_key, k)
        span = span_cache.get(key)
        if span is not None and span.last_id >= need:
            return span
        lines = self._lines[k * INDEX_EVERY : (k + 1) * INDEX_EVERY]
        if not lines:
            return None
        frames = b"".join([line.frame for line in lines])
        span = Span(lines[0].id, lines[-1].id, lines[-1].event, frames, 0)
        span_cache.put(key, span)
        return span

    def read_frames_after(
        self, cursor: int, upto: int | None = None
    ) -> Iterator[tuple[bytes, int, str]]:
        """The same as EventLog.read_frames_after, from memory."""
        for batch in self.read_after(cursor, upto):
            yield b"".join(line.frame for line in batch), batch[-1].id, batch[-1].event

    def read_after(self, cursor: int, upto: int | None = None) -> Iterator[list[LogLine]]:
        """Yield the lines with cursor < id <= upto as one batch."""
        end = len(self._lines) if upto is None else min(upto, len(self._lines))
        if max(cursor, 0) < end:
            yield self._lines[max(cursor, 0) : end]


def last_line(path: Path) -> LogLine | None:
    """The last whole line of a log, read from its end (read-only)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            pos, tail = size, b""
            while pos > 0 and tail.count(b"\n") < 2:
                step = min(READ_CHUNK, pos)
                pos -= step
                fh.seek(pos)
                tail = fh.read(step) + tail
    except FileNotFoundError:
        return None
    whole = tail[: tail.rfind(b"\n") + 1].rstrip(b"\n")
    if not whole:
        return None
    return to_log_line(whole.rsplit(b"\n", 1)[-1])
