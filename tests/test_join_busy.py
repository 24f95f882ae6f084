"""Viewers joining a busy run: replay in shared slices, turns that leave room for live readers,
and a handoff from replay to live without a gap or a duplicate (invariant 5)."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from od_runs import eventlog, frame_spans
from od_runs.eventlog import INDEX_EVERY, EventLog, MemoryLog, encode_lines
from od_runs.frame_spans import SLICE_BYTES
from od_runs.models import RunCreate
from od_runs.replay_turns import ReplayTurns
from od_runs.runs import open_service
from od_runs.sse import run_frames

from .conftest import Daemon, apoll, assert_dense, parse_frames, poll, read_log

TS = "2026-12-02T00:00:00.000Z"


def append(log: EventLog | MemoryLog, first: int, count: int, last: str = "stdout") -> int:
    """Append count events from id first in one batch (the last one named last)."""
    items: list[tuple[str, object]] = [
        ("stdout", {"text": f"line {first + i}"}) for i in range(count)
    ]
    items[-1] = (last, items[-1][1])
    raw, lines, lengths = encode_lines(first, items, TS, lambda text: text)
    log.append_batch(first, raw, lines, lengths)
    return first + count


def expected_frames(log: EventLog | MemoryLog, cursor: int, upto: int) -> bytes:
    """The frames of the events after cursor up to upto, built one line at a time."""
    return b"".join(line.frame for batch in log.read_after(cursor, upto) for line in batch)


def slices(log: EventLog | MemoryLog, cursor: int, upto: int) -> list[tuple[bytes, int, str]]:
    """frame_slice() called until it reaches upto, as a replaying reader calls it."""
    got = []
    while cursor < upto:
        piece = log.frame_slice(cursor, upto)
        assert piece is not None
        got.append(piece)
        cursor = piece[1]
    return got


def writer_logs(tmp_path: Path) -> list[EventLog | MemoryLog]:
    return [EventLog.create(tmp_path / "run"), MemoryLog()]


@pytest.mark.parametrize(("cursor", "upto"), [(0, 1500), (1, 700), (255, 257), (300, 1499)])
def test_slices_are_the_frames_of_each_line_from_any_cursor(
    tmp_path: Path, cursor: int, upto: int
) -> None:
    """Invariant 5: the slices of (cursor, upto] are exactly its events' frames, in order,
    each slice a bounded size, ending where the reader was told to stop."""
    for log in writer_logs(tmp_path):
        next_id = 1
        while next_id <= 1500:  # uneven batches, as a live run writes them
            next_id = append(log, next_id, min(97, 1501 - next_id))
        got = slices(log, cursor, upto)
        assert b"".join(frames for frames, _, _ in got) == expected_frames(log, cursor, upto)
        assert got[-1][1:] == (upto, "stdout")
        # One slice holds at most the budget plus the span that crossed it.
        span = max(len(line.frame) for batch in log.read_after(0) for line in batch) * INDEX_EVERY
        assert all(len(frames) <= SLICE_BYTES + span for frames, _, _ in got)
        assert len(got) > 1 or len(got[0][0]) <= SLICE_BYTES + span


def test_slices_follow_a_log_that_grows_and_end_on_its_end(tmp_path: Path) -> None:
    """A span still being written is served as far as it goes, then grows: a reader that
    comes back later gets the rest, not a stale copy, up to and including `end`."""
    for log in writer_logs(tmp_path):
        append(log, 1, 300)
        first = slices(log, 0, 300)
        append(log, 301, 10)
        append(log, 311, 5, last="end")
        second = slices(log, 300, 315)
        assert b"".join(f for f, _, _ in first + second) == expected_frames(log, 0, 315)
        assert second[-1][1:] == (315, "end")


def test_a_crowd_replaying_the_same_history_frames_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many readers replaying one log share its framed spans: the log's lines are turned
    into frames once, not once per reader."""
    framed: list[int] = []
    real = eventlog._frames

    def counting(data: bytes) -> bytes:
        framed.append(data.count(b"\n"))
        return real(data)

    monkeypatch.setattr(eventlog, "_frames", counting)
    log = EventLog.create(tmp_path / "run")
    append(log, 1, 2000)
    expected = expected_frames(log, 0, 2000)
    for _ in range(50):
        assert b"".join(f for f, _, _ in slices(log, 0, 2000)) == expected
    assert sum(framed) == 2000


def test_one_huge_log_does_not_push_the_others_out_of_the_shared_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 7: the shared frames stay within their budget, and one log takes a quarter
    of it at most, so a reader going through a huge run leaves a crowd's run cached."""
    shared_frames = frame_spans.SpanCache(400_000)
    monkeypatch.setattr(eventlog, "span_cache", shared_frames)
    framed: list[int] = []
    real = eventlog._frames

    def counted_frames(data: bytes) -> bytes:
        framed.append(1)
        return real(data)

    monkeypatch.setattr(eventlog, "_frames", counted_frames)
    crowd = EventLog.create(tmp_path / "crowd")
    append(crowd, 1, 500)
    expected = expected_frames(crowd, 0, 500)
    assert b"".join(f for f, _, _ in slices(crowd, 0, 500)) == expected
    huge = EventLog.create(tmp_path / "huge")
    for first in range(1, 20_001, 1000):
        append(huge, first, 1000)
    assert b"".join(f for f, _, _ in slices(huge, 0, 20_000)) == expected_frames(huge, 0, 20_000)
    assert shared_frames._bytes <= 400_000
    before = len(framed)
    assert b"".join(f for f, _, _ in slices(crowd, 0, 500)) == expected
    assert len(framed) == before  # served from the shared frames, not framed again


def test_a_log_this_process_did_not_write_is_left_to_the_reader_off_the_loop(
    tmp_path: Path,
) -> None:
    """A log opened only for reading has no index to slice by: frame_slice says so, and
    replay reads it in a thread instead of blocking the loop on the disk."""
    log = EventLog.create(tmp_path / "run")
    append(log, 1, 600, last="end")
    log.close()
    assert EventLog(log.path).frame_slice(0, 600) is None


@pytest.mark.anyio
async def test_replay_takes_turns_so_live_work_runs_between_slices() -> None:
    """A crowd of replaying readers gets a bounded number of slices per pass of the loop:
    a live reader woken in between runs after a few of them, not after the whole crowd."""
    turns = ReplayTurns(min_budget=0.001, max_budget=0.004)
    cost = 0.0005  # each slice reports this much loop time: at most 8 fit one pass
    steps_between: list[int] = []
    steps = 0
    done = asyncio.Event()

    async def replayer() -> None:
        nonlocal steps
        for _ in range(20):
            await turns.turn()
            steps += 1
            turns.charge(cost)

    async def live() -> None:
        nonlocal steps
        while not done.is_set():
            steps_between.append(steps)
            steps = 0
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(live())
    await asyncio.gather(*(replayer() for _ in range(100)))
    done.set()
    await watcher
    assert turns.granted == 2000
    assert max(steps_between) <= 0.004 / cost
    assert len(steps_between) >= 2000 / (0.004 / cost)


@pytest.mark.anyio
async def test_a_reader_joining_at_zero_while_events_stream_hands_off_once(
    tmp_path: Path,
) -> None:
    """Invariant 5: a reader attaching at 0 mid-run, replaying in slices while events keep
    coming, gets every event once, in order, and the stream ends on `end`."""
    async with open_service(tmp_path / "data") as service:
        run = await service.create(RunCreate())
        for i in range(3000):
            service.emit(run, "stdout", {"text": f"before {i}"})

        async def producer() -> None:
            for i in range(2000):
                service.emit(run, "stdout", {"text": f"during {i}"})
                if i % 50 == 0:
                    await asyncio.sleep(0)
            service.finish(run, "succeeded", 0)

        async def reader() -> list[int]:
            ids: list[int] = []
            async for chunk in run_frames(service, run.id, 0):
                ids += [int(f["id"]) for f in parse_frames(chunk.decode())]
            return ids

        with anyio.fail_after(30):
            got, _ = await asyncio.gather(reader(), producer())
        assert got == list(range(1, run.last_event_id + 1))
        log = read_log(run.log.path)  # type: ignore[attr-defined]
        assert_dense(log)


# Through a real daemon ----------------------------------------------------------------

# A child that prints numbered lines at a steady pace, so viewers join a run mid-stream.
STREAMER = (
    "import sys, time\n"
    "n, seconds = int(sys.argv[1]), float(sys.argv[2])\n"
    "start = time.monotonic()\n"
    "for i in range(n):\n"
    "    delay = start + i * seconds / n - time.monotonic()\n"
    "    if delay > 0:\n"
    "        time.sleep(delay)\n"
    "    print(f'line {i}', flush=True)\n"
)


def start_streamer(daemon: Daemon, lines: int, seconds: float) -> dict[str, Any]:
    with daemon.client() as http:
        response = http.post(
            "/api/runs",
            json={
                "agentId": "command",
                "command": [sys.executable, "-c", STREAMER, str(lines), str(seconds)],
                "prompt": "stream",
            },
        )
    assert response.status_code == 202, response.text
    status: dict[str, Any] = response.json()
    return status


async def watch(url: str, run_id: str, after: int) -> list[dict[str, str]]:
    """Every frame of one SSE stream from after, until the server closes it."""
    frames: list[dict[str, str]] = []
    buffer = ""
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as http,
        http.stream("GET", f"/api/runs/{run_id}/events?after={after}") as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_text():
            buffer += chunk
            complete, _, buffer = buffer.rpartition("\n\n")
            frames += parse_frames(complete)
    return frames


def head_of(daemon: Daemon, run_id: str) -> int:
    with daemon.client() as http:
        return int(http.get(f"/api/runs/{run_id}").json()["lastEventId"])


def assert_equals_log(frames: list[dict[str, str]], log_path: str, after: int) -> None:
    """The stream is the log after the cursor: every event once, in order, same bytes."""
    lines = Path(log_path).read_text().splitlines()[after:]
    assert [f["data"] for f in frames] == lines
    assert [int(f["id"]) for f in frames] == list(range(after + 1, after + 1 + len(lines)))


def test_a_viewer_joining_mid_stream_while_others_are_live_gets_every_event_once(
    shared: Daemon,
) -> None:
    """Invariant 5: viewers join a streaming run at 0 and at a cursor in its middle while
    others watch it live; each stream equals events.jsonl after its cursor, ids dense."""
    run = start_streamer(shared, lines=4000, seconds=2.5)
    results: dict[str, list[dict[str, str]]] = {}

    def follow(name: str, after: int) -> None:
        results[name] = asyncio.run(watch(shared.url, run["id"], after))

    live = [threading.Thread(target=follow, args=(f"live{i}", 0)) for i in range(5)]
    for thread in live:
        thread.start()
    middle = poll("the run to be mid-stream", lambda: head_of(shared, run["id"]) > 1500 or None)
    joiners = [
        threading.Thread(target=follow, args=("zero", 0)),
        threading.Thread(target=follow, args=("middle", 700)),
    ]
    for thread in joiners:
        thread.start()
    for thread in live + joiners:
        thread.join(timeout=60)
    assert middle and head_of(shared, run["id"]) > middle  # they joined a run still going
    log = read_log(run["eventsLogPath"])
    assert_dense(log)
    for name, frames in results.items():
        assert_equals_log(frames, run["eventsLogPath"], 700 if name == "middle" else 0)
    assert len(results) == 7


@pytest.mark.anyio
async def test_many_viewers_joining_at_the_start_of_a_streaming_run_all_get_everything(
    shared: Daemon,
) -> None:
    """Invariant 5: a crowd opening a streaming run at after=0 at once, next to viewers
    already live, all get the whole run exactly as logged."""
    run = start_streamer(shared, lines=3000, seconds=2.0)
    early = [asyncio.ensure_future(watch(shared.url, run["id"], 0)) for _ in range(5)]

    async def mid_stream() -> bool:
        async with httpx.AsyncClient(base_url=shared.url) as http:
            body = (await http.get(f"/api/runs/{run['id']}")).json()
        return bool(body["lastEventId"] > 1000)

    await apoll("the run to be mid-stream", mid_stream)
    crowd = [asyncio.ensure_future(watch(shared.url, run["id"], 0)) for _ in range(60)]
    with anyio.fail_after(60):
        streams = await asyncio.gather(*early, *crowd)
    for frames in streams:
        assert_equals_log(frames, run["eventsLogPath"], 0)
    assert streams[0][-1]["event"] == "end"
