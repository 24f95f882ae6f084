"""Hostile child output: a 10 MB line without a newline, bursts of invalid UTF-8.

The run still finishes, the daemon's memory stays bounded, and events.jsonl stays valid,
dense JSONL whose pieces add back up to what the child wrote.
"""

from __future__ import annotations

import json
import random
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from od_runs.agents.lines import MAX_LINE_BYTES, OVERLONG, LineJoiner, LineSplitter

from .conftest import RUN_DEADLINE, Daemon, assert_dense, wait_terminal, write_script

BIG_LINE = 10 * 1024 * 1024
# An event carries at most MAX_LINE_BYTES of output; JSON escaping and the envelope add some.
MAX_EVENT_LINE = 200 * 1024
# The daemon may not grow by more than this while it streams a 10 MB line.
RSS_GROWTH_LIMIT = 60 * 1024 * 1024

# Writes the bytes of the file argv[1] to stdout and argv[2] (if any) to stderr, interleaved,
# in odd-sized writes so that pipe reads cut lines and characters at varied places.
WRITER = """\
import sys
out = open(sys.argv[1], "rb").read()
err = open(sys.argv[2], "rb").read() if len(sys.argv) > 2 and sys.argv[2] else b""
step = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 20
for i in range(0, max(len(out), len(err)), step):
    sys.stdout.buffer.write(out[i : i + step])
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(err[i : i + step])
    sys.stderr.buffer.flush()
"""


# Helpers -----------------------------------------------------------------------------------


def read_jsonl_strict(path: str | Path) -> tuple[list[dict], list[bytes]]:
    """Events and raw lines of a log split on b"\\n" only, each strict UTF-8 JSON.

    (conftest.read_log uses str.splitlines, which also splits on U+2028 and U+0085: valid
    characters that a JSON line may carry unescaped.)
    """
    data = Path(path).read_bytes()
    assert data.endswith(b"\n"), "log ends in a torn line"
    raw = data[:-1].split(b"\n")
    return [json.loads(line.decode("utf-8", "strict")) for line in raw], raw


def start_command(daemon: Daemon, argv: list[str]) -> dict:
    """POST a `command` run and return its status body."""
    with daemon.client() as http:
        response = http.post("/api/runs", json={"agentId": "command", "command": argv})
    assert response.status_code == 202, response.text
    return response.json()


def output_texts(events: list[dict], stream: str) -> list[str]:
    """The output lines of one stream, with continuation pieces joined back together."""
    lines: list[str] = []
    pending: list[str] = []
    for event in events:
        if event["event"] != stream:
            continue
        pending.append(event["data"]["text"])
        if not event["data"].get("partial", False):
            lines.append("".join(pending))
            pending = []
    assert not pending, f"{stream} ends in a partial piece"
    return lines


def expected_lines(data: bytes) -> list[str]:
    """What a reader should see of data: lines split on \\n, CR of CRLF dropped, U+FFFD."""
    parts = data.split(b"\n")
    last = parts.pop()
    lines = [p.removesuffix(b"\r").decode("utf-8", "replace") for p in parts]
    if last:
        lines.append(last.decode("utf-8", "replace"))
    return lines


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, int]]:
    """Sample a process's RSS every few ms in a thread; yields {'base', 'peak'}."""
    proc = psutil.Process(pid)
    result = {"base": proc.memory_info().rss, "peak": 0}
    result["peak"] = result["base"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                result["peak"] = max(result["peak"], proc.memory_info().rss)
            except psutil.Error:
                return
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout=5)
    result["peak"] = max(result["peak"], proc.memory_info().rss)


def big_payload() -> bytes:
    """About 10 MB of valid UTF-8 without a newline: 1- to 4-byte characters, quotes, tabs.

    The repeated block is not a multiple of the piece size, so pieces end inside characters.
    """
    alphabet = ["a", "b", "z", " ", "é", "€", "😀", '"', "\\", "\t", "漢"]
    block = "".join(random.Random(7).choices(alphabet, k=40_003)).encode()
    return block * (BIG_LINE // len(block) + 1)


def invalid_burst(seed: int) -> bytes:
    """Random bytes plus the classic offenders; ends in a truncated character, no newline."""
    rng = random.Random(seed)
    offenders = [
        b"\xff\xfe",  # never valid in UTF-8 (a UTF-16 BOM)
        b"\x00" * 64,  # NULs
        b"\xed\xa0\x80",  # an encoded lone high surrogate
        b"\xed\xbf\xbf",  # an encoded lone low surrogate
        b"\xc0\xaf",  # overlong '/'
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\x80\xbf",  # stray continuation bytes
        b"\xe2\x80\xa8",  # U+2028, valid, a line separator in JavaScript
        b"\xc2\x85",  # U+0085, valid, a line break to str.splitlines
        b"ok \xe2\x82\xac\r\n",  # a valid euro sign, CRLF
        b"\r",  # a bare CR inside a line
    ]
    parts: list[bytes] = []
    for _ in range(400):
        parts.append(rng.randbytes(rng.randint(0, 600)))
        parts.append(rng.choice(offenders))
    return b"".join(parts) + b"tail \xe2\x82"


# A 10 MB line --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_10_mb_line_without_newline_streams_in_bounded_pieces_and_memory(
    daemon: Daemon, tmp_path: Path
) -> None:
    """10 MB without a newline: run succeeds, small log lines re-join exactly, RSS bounded."""
    assert daemon.proc is not None
    script = write_script(tmp_path, "writer.py", WRITER)
    payload = big_payload()
    (tmp_path / "big.bin").write_bytes(payload)
    (tmp_path / "small.bin").write_bytes(payload[:300_000])

    # Warm up the code paths (thread pools, encoders) so the baseline is not cold-start noise.
    warm = start_command(daemon, [sys.executable, str(script), str(tmp_path / "small.bin")])
    assert wait_terminal(daemon, warm["id"])["status"] == "succeeded"

    frames: list[bytes] = []

    def follow(run_id: str) -> None:
        with (
            daemon.client(timeout=RUN_DEADLINE) as http,
            http.stream("GET", f"/api/runs/{run_id}/events") as response,
        ):
            frames.extend(response.iter_bytes())

    with peak_rss(daemon.proc.pid) as rss:
        run = start_command(
            daemon, [sys.executable, str(script), str(tmp_path / "big.bin"), "", "1000003"]
        )
        follower = threading.Thread(target=follow, args=(run["id"],), daemon=True)
        follower.start()
        final = wait_terminal(daemon, run["id"])
        follower.join(timeout=RUN_DEADLINE)
    assert not follower.is_alive(), "the SSE stream did not close after `end`"

    assert final["status"] == "succeeded", final
    assert final["exitCode"] == 0
    growth = rss["peak"] - rss["base"]
    assert growth < RSS_GROWTH_LIMIT, f"daemon RSS grew by {growth / 2**20:.1f} MiB"

    events, raw = read_jsonl_strict(final["eventsLogPath"])
    assert_dense(events)
    assert events[-1]["data"] == {"status": "succeeded", "code": 0, "signal": None}
    assert max(len(line) for line in raw) < MAX_EVENT_LINE
    stdout = [e for e in events if e["event"] == "stdout"]
    assert len(stdout) >= BIG_LINE // MAX_LINE_BYTES
    assert all(e["data"].get("partial") is True for e in stdout[:-1])
    assert "partial" not in stdout[-1]["data"]
    assert "".join(e["data"]["text"] for e in stdout).encode() == payload
    assert not [e for e in events if e["event"] == "stderr"]

    # The live SSE stream carried exactly the logged lines, ids in order.
    text = b"".join(frames)
    data_lines = [line[6:] for line in text.split(b"\n") if line.startswith(b"data: ")]
    assert data_lines == raw


# Invalid UTF-8 -------------------------------------------------------------------------------


def test_a_burst_of_invalid_utf8_becomes_replacement_characters_in_a_valid_log(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Invalid UTF-8 on both pipes: run succeeds, log is strict JSON, U+FFFD, stderr events."""
    script = write_script(tmp_path, "writer.py", WRITER)
    out, err = invalid_burst(1), invalid_burst(2)
    (tmp_path / "out.bin").write_bytes(out)
    (tmp_path / "err.bin").write_bytes(err)

    run = start_command(
        daemon,
        [sys.executable, str(script), str(tmp_path / "out.bin"), str(tmp_path / "err.bin"), "4093"],
    )
    final = wait_terminal(daemon, run["id"])
    assert final["status"] == "succeeded", final

    events, raw = read_jsonl_strict(final["eventsLogPath"])
    assert_dense(events)
    assert {e["event"] for e in events} == {"start", "stdout", "stderr", "end"}
    assert b"\x00" not in b"".join(raw), "a raw NUL reached the log"
    assert max(len(line) for line in raw) < MAX_EVENT_LINE

    stdout, stderr = output_texts(events, "stdout"), output_texts(events, "stderr")
    assert stdout == expected_lines(out)
    assert stderr == expected_lines(err)
    for lines in (stdout, stderr):
        joined = "\n".join(lines)
        assert "\ufffd" in joined
        assert "\x00" in joined
        assert "\u2028" in joined
    assert stdout[-1].endswith("tail \ufffd")

    # The same events come back through the JSON page of the REST API.
    with daemon.client() as http:
        page = http.get(
            f"/api/runs/{run['id']}/events", params={"format": "json", "limit": 1000}
        ).json()
    assert page["items"] == events[: len(page["items"])]


# LineSplitter ------------------------------------------------------------------------------


def split_all(chunks: list[bytes], max_line: int = MAX_LINE_BYTES) -> list[tuple[str, bool]]:
    """Feed chunks to a fresh LineSplitter and flush it at EOF."""
    splitter = LineSplitter(max_line)
    out: list[tuple[str, bool]] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.finish()


def test_splitter_splits_on_newline_across_chunks() -> None:
    """Lines come out whole however the chunks cut them; empty lines are kept."""
    assert split_all([b"a\nb\n"]) == [("a", False), ("b", False)]
    assert split_all([b"hel", b"lo\nwor", b"ld\n"]) == [("hello", False), ("world", False)]
    assert split_all([b"\n\n"]) == [("", False), ("", False)]
    assert split_all([]) == []
    assert split_all([b"", b""]) == []


def test_splitter_drops_the_cr_of_crlf_and_keeps_other_crs() -> None:
    """CRLF ends a line like LF (also split across chunks); a CR elsewhere is text."""
    assert split_all([b"a\r\nb\r\n"]) == [("a", False), ("b", False)]
    assert split_all([b"a\r", b"\nb\n"]) == [("a", False), ("b", False)]
    assert split_all([b"x\ry\n", b"\r\n"]) == [("x\ry", False), ("", False)]


def test_splitter_flushes_an_unterminated_last_line_at_eof() -> None:
    """The last line without a newline is not lost, including a truncated character."""
    splitter = LineSplitter()
    assert splitter.feed(b"done\nno newline") == [("done", False)]
    assert splitter.finish() == [("no newline", False)]
    assert splitter.finish() == []
    assert split_all([b"cut \xe2\x82"]) == [("cut \ufffd", False)]


def test_splitter_cuts_long_lines_into_bounded_pieces_marked_partial() -> None:
    """A line longer than the bound comes out in pieces; only the last is not partial."""
    assert split_all([b"x" * 20 + b"\n"], 8) == [("x" * 8, True), ("x" * 8, True), ("xxxx", False)]
    assert split_all([b"x" * 16 + b"\n"], 8) == [("x" * 8, True), ("x" * 8, False)]
    assert split_all([b"x" * 8 + b"\n"], 8) == [("x" * 8, False)]
    # Without a newline the pieces leave as soon as they are full, the rest at EOF.
    splitter = LineSplitter(8)
    assert splitter.feed(b"y" * 20) == [("y" * 8, True), ("y" * 8, True)]
    assert splitter.feed(b"yy\nz") == [("y" * 6, False)]
    assert splitter.finish() == [("z", False)]


def test_splitter_decodes_a_character_cut_at_a_piece_boundary_whole() -> None:
    """A multi-byte character split between pieces is not turned into U+FFFD."""
    pieces = split_all(["ab€c\n".encode()], 4)
    assert pieces == [("ab", True), ("€c", False)]


def test_splitter_replaces_invalid_utf8() -> None:
    """Invalid bytes become U+FFFD and do not leak into the next line."""
    assert split_all([b"\xff\xfeok\n\xe2\n\xed\xa0\x80\n"]) == [
        ("\ufffd\ufffdok", False),
        ("\ufffd", False),
        (b"\xed\xa0\x80".decode("utf-8", "replace"), False),
    ]


@pytest.mark.parametrize("seed", range(20))
def test_splitter_round_trips_random_bytes_in_random_chunks(seed: int) -> None:
    """Any bytes, chunks and bound: bounded pieces, partial on all but the last, exact lines."""
    rng = random.Random(seed)
    max_line = rng.choice([4, 7, 64, 1000])
    alphabet = [b"a", b"\n", b"\r\n", b"\r", "é".encode(), "😀".encode(), b"\xff", b"\xe2\x82"]
    data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
    chunks: list[bytes] = []
    at = 0
    while at < len(data):
        size = rng.randint(1, 3 * max_line)
        chunks.append(data[at : at + size])
        at += size

    splitter = LineSplitter(max_line)
    lines: list[str] = []
    pending: list[str] = []
    for chunk in [*chunks, None]:
        out = splitter.feed(chunk) if chunk is not None else splitter.finish()
        for text, partial in out:
            # Held bytes of a cut character may add up to 3 bytes, each byte at most one
            # U+FFFD (3 bytes): the bound is on characters, and on bytes within 3x.
            assert len(text) <= max_line + 3
            assert len(text.encode()) <= 3 * (max_line + 3)
            pending.append(text)
            if not partial:
                lines.append("".join(pending))
                pending = []
    assert not pending
    assert lines == expected_lines(data)


def test_line_joiner_reassembles_pieces_and_skips_an_absurd_line() -> None:
    """Agent adapters get whole JSON lines back, and one warning for a line past the limit."""
    joiner = LineJoiner(limit=10)
    assert joiner.feed('{"a":', True) is None
    assert joiner.feed("1}", False) == '{"a":1}'
    assert joiner.feed("whole", False) == "whole"
    assert joiner.feed("x" * 8, True) is None
    assert joiner.feed("y" * 8, True) is OVERLONG
    assert joiner.feed("z" * 8, True) is None  # the rest of the skipped line
    assert joiner.feed("end", False) is None
    assert joiner.feed("next", False) == "next"
