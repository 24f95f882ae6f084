"""Replay's shared frames: spans of a log framed once for every reader, and slices of them.

A crowd opening a busy run at after=0 replays the same history: each span of it (the
events between two index points of eventlog.py) is turned into SSE frames once and kept,
within a byte budget for the whole process, and readers take slices of those bytes with
only the first and last span cut (a bytes search for a frame start, no work per event).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from itertools import count

# Replay of a live run is served in spans of eventlog.INDEX_EVERY events, framed once and
# kept for every reader that replays the same history (a crowd opening a run at after=0): this many
# bytes of frames at most, over all logs of the process, least recently used dropped first.
SPAN_CACHE_BYTES = int(os.environ.get("OD_RUNS_REPLAY_CACHE", 64 * 1024 * 1024))
# A span whose lines take more than this (huge events) is not framed on the event loop.
SPAN_MAX_BYTES = 1024 * 1024
# Bytes of frames one frame_slice() hands out at most (one span more at worst).
SLICE_BYTES = 256 * 1024
SPAN_KEYS = count()


class Span:
    """The frames of one span of a log: the events from first_id to last_id (maybe not all
    of the span yet, while the run writes it), and the log offset where they end."""

    __slots__ = ("end_offset", "first_id", "frames", "last_event", "last_id")

    def __init__(
        self, first_id: int, last_id: int, last_event: str, frames: bytes, end_offset: int
    ) -> None:
        self.first_id = first_id
        self.last_id = last_id
        self.last_event = last_event
        self.frames = frames
        self.end_offset = end_offset


class SpanCache:
    """Framed spans of every log of the process, within a byte budget (least recent out).

    One log may fill a quarter of it at most: a reader going through a huge log frames
    its spans without pushing out every other run's history.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._spans: OrderedDict[tuple[int, int], Span] = OrderedDict()
        self._bytes = 0
        self._per_log: dict[int, int] = {}

    def get(self, key: tuple[int, int]) -> Span | None:
        """The span under key, now the most recently used; None if not kept."""
        span = self._spans.get(key)
        if span is not None:
            self._spans.move_to_end(key)
        return span

    def put(self, key: tuple[int, int], span: Span) -> None:
        """Keep span under key, dropping the least recently used beyond the budget."""
        old = self._spans.pop(key, None)
        if old is not None:
            self._account(key[0], -len(old.frames))
        if self._per_log.get(key[0], 0) + len(span.frames) > self.budget // 4:
            return  # this log has its share: the span serves the reader that built it only
        self._spans[key] = span
        self._account(key[0], len(span.frames))
        while self._bytes > self.budget and self._spans:
            dropped_key, dropped = self._spans.popitem(last=False)
            self._account(dropped_key[0], -len(dropped.frames))

    def _account(self, log_key: int, size: int) -> None:
        self._bytes += size
        left = self._per_log.get(log_key, 0) + size
        if left:
            self._per_log[log_key] = left
        else:
            self._per_log.pop(log_key, None)


span_cache = SpanCache(SPAN_CACHE_BYTES)


def slice_spans(
    cursor: int,
    upto: int,
    budget: int,
    span_at: Callable[[int, int], Span | None],
    every: int,
) -> tuple[bytes, int, str] | None:
    """Frames of the events after cursor up to upto, from whole spans, about budget bytes.

    span_at(k, need) is span k framed through at least id need, or None if it cannot be
    had without blocking. Only the first and last span of a slice are cut, with a bytes
    search for a frame start (`id: N` after a blank line): no work per event.
    """
    pieces: list[bytes] = []
    size = 0
    last_id, last_event = cursor, ""
    while last_id < upto and size < budget:
        k = last_id // every
        need = min(upto, (k + 1) * every)
        span = span_at(k, need)
        if span is None or span.last_id <= last_id:
            break
        frames = span.frames
        if span.first_id <= last_id:  # starts inside the span: cut its head
            frames = frames[_frame_start(frames, last_id + 1) :]
        if span.last_id > upto:  # ends inside the span: cut its tail
            frames = frames[: _frame_start(frames, upto + 1)]
            last_id, last_event = upto, _last_frame_event(frames)
        else:
            last_id, last_event = span.last_id, span.last_event
        pieces.append(frames)
        size += len(frames)
    if not pieces:
        return None
    return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), last_id, last_event


def _frame_start(frames: bytes, event_id: int) -> int:
    """Where the frame of event_id starts in frames (a JSON line holds no raw newline, so
    `\n\nid: N\n` only occurs between frames)."""
    head = b"id: %d\n" % event_id
    if frames.startswith(head):
        return 0
    return frames.index(b"\n\n" + head) + 2


def _last_frame_event(frames: bytes) -> str:
    """The event name of the last frame."""
    start = frames.rindex(b"\nevent: ") + 8
    return frames[start : frames.index(b"\n", start)].decode()


__all__ = [
    "SLICE_BYTES",
    "SPAN_KEYS",
    "SPAN_MAX_BYTES",
    "Span",
    "SpanCache",
    "slice_spans",
    "span_cache",
]
