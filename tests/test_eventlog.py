"""The durable log: whole-line appends, indexed replay from any cursor, crash-tail repair."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from od_runs.eventlog import (
    INDEX_EVERY,
    EventLog,
    LogLine,
    encode_lines,
    last_line,
    recover_tail,
)

TS = "2026-11-21T00:00:00.000Z"


def no_scrub(text: str) -> str:
    return text


def append_events(log: EventLog, first: int, count: int, payload: str = "x") -> int:
    """Append count stdout events starting at id first in one write; the next free id."""
    items = [("stdout", {"text": f"{payload}{first + i}"}) for i in range(count)]
    data, _, lengths = encode_lines(first, items, TS, no_scrub)
    log.append(first, data, lengths)
    return first + count


def build_log(run_dir: Path, total: int, batch: int = 97) -> EventLog:
    """A log of total events written in uneven batches, as a live run writes it."""
    log = EventLog.create(run_dir)
    next_id = 1
    while next_id <= total:
        next_id = append_events(log, next_id, min(batch, total - next_id + 1))
    return log


def ids_after(log: EventLog, cursor: int, upto: int | None = None) -> list[int]:
    return [line.id for batch in log.read_after(cursor, upto) for line in batch]


def line_offsets(path: Path) -> dict[int, int]:
    """Byte offset of each line, keyed by event id, read the slow way."""
    offsets, pos = {}, 0
    with open(path, "rb") as fh:
        for raw in fh:
            offsets[json.loads(raw)["id"]] = pos
            pos += len(raw)
    return offsets


def test_every_event_is_one_parseable_line_with_fields_in_order(tmp_path: Path) -> None:
    """A tail -F reader sees `{"id","event","data","ts"}` per line, ids dense from 1."""
    log = build_log(tmp_path / "run", 10)
    log.close()
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [list(p) for p in parsed] == [["id", "event", "data", "ts"]] * 10
    assert [p["id"] for p in parsed] == list(range(1, 11))
    assert parsed[3] == {"id": 4, "event": "stdout", "data": {"text": "x4"}, "ts": TS}


@pytest.mark.parametrize("cursor", [0, 1, 255, 256, 257, 511, 512, 1000, 1499, 1500, 2000])
def test_replay_from_any_cursor_is_exactly_the_events_after_it(tmp_path: Path, cursor: int) -> None:
    """Replay gives ids cursor+1..end, for cursors on and around index boundaries."""
    log = build_log(tmp_path / "run", 1500)
    assert ids_after(log, cursor) == list(range(cursor + 1, 1501))


def test_replay_stops_at_the_head_noted_when_attaching(tmp_path: Path) -> None:
    """upto bounds replay so live delivery can take over without a duplicate."""
    log = build_log(tmp_path / "run", 1000)
    assert ids_after(log, 300, upto=700) == list(range(301, 701))
    assert ids_after(log, 700, upto=700) == []


def test_a_log_from_before_a_restart_replays_the_same(tmp_path: Path) -> None:
    """A fresh reader with no index (a restarted daemon) finds every cursor by bisection."""
    build_log(tmp_path / "run", 1300).close()
    cold = EventLog(tmp_path / "run" / "events.jsonl")
    for cursor in (0, 1, 2, 700, 1024, 1299, 1300, 5000):
        assert ids_after(cold, cursor) == list(range(cursor + 1, 1301))


def test_seeking_near_the_end_does_not_read_from_the_start(tmp_path: Path) -> None:
    """The sparse index and the bisection both land within one index step of the cursor."""
    total = 5000
    log = build_log(tmp_path / "run", total)
    offsets = line_offsets(log.path)
    cursor = total - 10
    with open(log.path, "rb") as fh:
        warm = log._start_offset(fh, cursor)
        cold = EventLog(log.path)._start_offset(fh, cursor)
    target = offsets[cursor + 1]
    floor = offsets[cursor + 1 - INDEX_EVERY]
    assert floor <= warm <= target
    assert floor <= cold <= target


def test_each_write_call_holds_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invariant 4: every write() to the log starts and ends on a line boundary.

    A reader racing a write can still see a write half-copied (the kernel grows the file page
    by page), which is why readers keep an unterminated last line for the next read; what the
    writer guarantees is that no write leaves a partial line behind once it returns.
    """
    log = EventLog.create(tmp_path / "run")
    real_write = os.write
    writes: list[bytes] = []

    def spy(fd: int, data: bytes) -> int:
        if fd == log._fd:
            writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    next_id = 1
    for count in (1, 50, 3, 400, 7):
        next_id = append_events(log, next_id, count, payload="y" * 300)
    monkeypatch.undo()
    assert len(writes) == 5
    for data in writes:
        assert data.endswith(b"\n")
        assert all(line.startswith(b'{"id":') for line in data.split(b"\n")[:-1])
    assert ids_after(log, 0) == list(range(1, next_id))


def test_files_are_private(tmp_path: Path) -> None:
    """Run dirs are 0700 and logs 0600 whatever the umask."""
    old = os.umask(0)
    try:
        log = build_log(tmp_path / "run", 3)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_a_torn_last_line_from_a_crash_is_cut_on_recovery(tmp_path: Path) -> None:
    """recover_tail drops the partial line a kill -9 left and reports the last whole one."""
    build_log(tmp_path / "run", 20).close()
    path = tmp_path / "run" / "events.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"id":21,"event":"stdout","data":{"te')
    last = recover_tail(path)
    assert last is not None and last.id == 20
    assert path.read_bytes().endswith(b"\n")
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == list(range(1, 21))
    assert last_line(path) is not None and last_line(path).id == 20  # type: ignore[union-attr]


def test_a_log_with_only_a_torn_line_becomes_empty(tmp_path: Path) -> None:
    """A crash before the first newline leaves an empty, valid log."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id":1,"ev')
    assert recover_tail(path) is None
    assert path.read_bytes() == b""


def test_encoding_scrubs_once_and_builds_frames_from_the_same_bytes() -> None:
    """Secrets are scrubbed before serialising; the SSE frame carries the logged line."""
    items = [("stdout", {"text": "token=abc123secret"}), ("stderr", {"text": "ok"})]
    data, lines, lengths = encode_lines(
        7, items, TS, lambda text: text.replace("abc123secret", "[REDACTED]")
    )
    assert b"abc123secret" not in data
    assert sum(lengths) == len(data)
    assert [line.id for line in lines] == [7, 8]
    first: LogLine = lines[0]
    assert first.frame == b"id: 7\nevent: stdout\ndata: " + first.line + b"\n\n"
    assert json.loads(first.line)["data"]["text"] == "token=[REDACTED]"


def test_appending_after_close_is_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    """A closed log refuses writes loudly."""
    log = build_log(tmp_path / "run", 2)
    log.close()
    data, _, lengths = encode_lines(3, [("stdout", {"text": "late"})], TS, no_scrub)
    with pytest.raises(OSError):
        log.append(3, data, lengths)


@pytest.mark.parametrize(
    ("cursor", "upto"), [(0, None), (1, None), (300, 700), (255, 256), (1499, None), (10, 10)]
)
def test_frame_replay_is_byte_for_byte_the_frames_of_each_line(
    tmp_path: Path, cursor: int, upto: int | None
) -> None:
    """The bulk SSE path equals building each line's frame, warm index or cold log."""
    log = build_log(tmp_path / "run", 1500)
    expected = b"".join(line.frame for batch in log.read_after(cursor, upto) for line in batch)
    for reader in (log, EventLog(log.path)):
        chunks = list(reader.read_frames_after(cursor, upto))
        assert b"".join(frames for frames, _, _ in chunks) == expected
        if chunks:
            assert chunks[-1][1:] == (upto or 1500, "stdout")


def test_frame_replay_leaves_an_unfinished_last_line_for_later(tmp_path: Path) -> None:
    """A line being written when replay reads the file is not sent half-done."""
    build_log(tmp_path / "run", 5).close()
    path = tmp_path / "run" / "events.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"id":6,"event":"stdout","da')
    frames = b"".join(f for f, _, _ in EventLog(path).read_frames_after(0))
    assert frames.count(b"\nevent: ") == 5 and b"id: 6" not in frames
