"""The fan-out hub: shared batches, the publish window, bounded backlogs (invariants 5, 10)."""

from __future__ import annotations

import math

import anyio
import pytest

from od_runs.eventlog import LogLine
from od_runs.fanout import MAX_WINDOW, WINDOW_PER_READER, Fanout

pytestmark = pytest.mark.anyio


def line(event_id: int, event: str = "stdout") -> LogLine:
    """A logged event as the run service hands it over."""
    return LogLine(event_id, event, b'{"id":%d,"event":"%s"}' % (event_id, event.encode()))


def ids(batches: list) -> list[int]:
    """The event ids of batches, in order."""
    return [x.id for batch in batches for x in batch.lines]


async def test_a_lone_reader_gets_each_event_at_once() -> None:
    """One reader: the window is microseconds, so every event is published as it comes."""
    hub = Fanout()
    reader = hub.subscribe()
    for event_id in (1, 2, 3):
        hub.offer([line(event_id)])
        with anyio.fail_after(1):
            assert ids(await reader.take()) == [event_id]


async def test_many_readers_get_a_burst_as_one_shared_batch() -> None:
    """With enough readers for the widest window, the first event goes out at once; the
    burst behind it waits for the window and reaches every reader as the same bytes, once,
    in order."""
    hub = Fanout()
    count = math.ceil(MAX_WINDOW / WINDOW_PER_READER)
    readers = [hub.subscribe() for _ in range(count)]
    assert count * WINDOW_PER_READER >= MAX_WINDOW  # the window is at its bound here
    hub.offer([line(1)])
    first = [await r.take() for r in readers]
    assert all(ids(b) == [1] for b in first)
    for event_id in range(2, 51):
        hub.offer([line(event_id)])
    with anyio.fail_after(5):  # the timer publishes the rest
        burst = [await r.take() for r in readers]
    assert all(ids(b) == list(range(2, 51)) for b in burst)
    assert all(len(b) == 1 for b in burst)  # one batch, not 49
    shared = burst[0][0].frames
    assert all(b[0].frames is shared for b in burst)  # encoded once for everybody
    assert shared.count(b"\nevent: stdout\n") == 49


async def test_an_end_is_published_at_once_with_whatever_waits() -> None:
    """The end never waits for a window: nothing follows it, and readers close on it."""
    hub = Fanout()
    readers = [hub.subscribe() for _ in range(500)]
    hub.offer([line(1)])
    hub.offer([line(2)])  # inside the window: held back
    hub.offer([line(3, "end")])
    # take() does not wait when something is pending, so had the end been held back for
    # the timer, a reader would see [1] alone here.
    for reader in readers:
        assert ids(await reader.take()) == [1, 2, 3]


async def test_a_reader_too_far_behind_is_dropped_and_the_others_are_not() -> None:
    """Invariant 10: a reader whose backlog passes its byte limit is dropped (its on_drop
    runs, so a response stuck in a socket write is torn down); others keep receiving."""
    hub = Fanout()
    slow = hub.subscribe(limit=200)
    fast = hub.subscribe()
    dropped = anyio.Event()
    slow.on_drop = dropped.set
    got: list[int] = []
    for event_id in range(1, 40):
        hub.offer([line(event_id)])
        hub.flush()
        got += ids(await fast.take())
    assert dropped.is_set()
    assert await slow.take() == []  # dropped: the stream ends and resumes from the log
    assert got == list(range(1, 40))


async def test_closing_publishes_what_waits_then_ends_every_reader() -> None:
    """A log the disk refused closes the hub: readers get what was logged, then nothing."""
    hub = Fanout()
    readers = [hub.subscribe() for _ in range(100)]
    hub.offer([line(1)])
    hub.offer([line(2)])
    hub.close()
    for reader in readers:
        seen = []
        with anyio.fail_after(1):
            while batches := await reader.take():
                seen += ids(batches)
        assert seen == [1, 2]
