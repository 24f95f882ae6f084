"""Invariant 10 under fire: a client that stops reading next to one that keeps up."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest

from ..conftest import Daemon, assert_dense, parse_frames, poll, read_log, wait_terminal

# A child that prints 2,500 lines of 3 KB paced over 3 s: about 7.5 MB of frames, enough to
# fill a stalled reader's socket buffers and its queue, but so few events that the daemon and
# the test's own reader use little CPU. The run's duration is then set by the child's clock,
# not by how busy the machine is (CI runs another test beside this one on two cores).
PACER = """
import sys, time
lines, width, duration = 2500, 3000, 3.0
started = time.monotonic()
for i in range(lines):
    delay = started + i * duration / lines - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sys.stdout.write(f"line {i:05d} " + "all work and no play " * (width // 21) + "\\n")
    sys.stdout.flush()
"""


def paced_run(daemon: Daemon) -> dict:
    """Start the paced child as a `command` run."""
    return daemon.create({"agentId": "command", "command": ["python3", "-c", PACER]})


class Reader(threading.Thread):
    """A client that reads a run's SSE stream to the end and notes when it got there."""

    def __init__(self, daemon: Daemon, run_id: str, after: int = 0) -> None:
        super().__init__(daemon=True)
        self.daemon_ = daemon
        self.run_id = run_id
        self.after = after
        self.text = ""
        self.finished_at = 0.0

    def run(self) -> None:
        with (
            self.daemon_.client() as http,
            http.stream("GET", f"/api/runs/{self.run_id}/events?after={self.after}") as response,
        ):
            self.text = "".join(response.iter_text())
        self.finished_at = time.monotonic()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Stalled sockets a test opened, closed at teardown even when an assertion failed first
    (a leaked one would surface as a ResourceWarning in whichever test runs next)."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def open_stalled(daemon: Daemon, run_id: str, sockets: list[socket.socket]) -> socket.socket:
    """Send a stream request and then never read: a browser tab frozen by the OS."""
    sock = socket.socket()
    sockets.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", daemon.port))
    sock.sendall(
        f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def drain_stalled(sock: socket.socket) -> tuple[str, bool]:
    """Read what the server sent until it closed the connection; (body text, clean end)."""
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    sock.settimeout(20)
    body = bytearray()
    with sock:
        while True:
            data = sock.recv(1 << 20)
            conn.receive_data(data)
            try:
                while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        return body.decode(), True  # the whole response: never dropped
            except h11.RemoteProtocolError:
                break  # closed in the middle of the chunked body: the server dropped us
            if not data:
                break
    return body.decode(), False


def run_once(
    daemon: Daemon, sockets: list[socket.socket] | None = None
) -> tuple[dict, Reader, socket.socket | None]:
    """One paced run with a normal reader, and a stalled one beside it if given `sockets`."""
    run = paced_run(daemon)
    sock = open_stalled(daemon, run["id"], sockets) if sockets is not None else None
    reader = Reader(daemon, run["id"])
    started = time.monotonic()
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "the normal reader never saw the end of the run"
    reader.finished_at -= started
    return wait_terminal(daemon, run["id"]), reader, sock


def seconds(status: dict) -> float:
    """How long a run ran, from its status timestamps."""

    def parse(ts: str) -> float:
        return time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float(ts[19:-1] or 0)

    return parse(status["finishedAt"]) - parse(status["startedAt"])


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[Daemon]:
    """A daemon with a 1 MB per-reader buffer, so a stalled reader overflows within the run."""
    started = Daemon(data_dir)
    started.env["OD_RUNS_SUBSCRIBER_BUFFER"] = str(1024 * 1024)
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_a_stalled_client_is_dropped_while_the_run_and_other_clients_go_on(
    daemon: Daemon, sockets: list[socket.socket]
) -> None:
    """Invariant 10: ingest and a normal client keep pace (within 10 %); the stalled one is cut
    and resumes."""
    control, control_reader, _ = run_once(daemon)
    status, reader, sock = run_once(daemon, sockets)
    assert sock is not None
    log = read_log(status["eventsLogPath"])
    assert_dense(log)

    # The run and the reader that keeps up are as fast as without the stalled client.
    assert status["status"] == "succeeded"
    assert seconds(status) <= seconds(control) * 1.10 + 0.05
    assert reader.finished_at <= control_reader.finished_at * 1.10 + 0.05
    got = [json.loads(f["data"]) for f in parse_frames(reader.text)]
    assert got == log

    # The stalled client was disconnected before the end instead of buffering without bound.
    text, clean = drain_stalled(sock)
    assert not clean
    frames = parse_frames(text.rpartition("\n\n")[0] + "\n\n")
    assert frames and frames[-1]["event"] != "end"
    assert len(frames) < len(log)

    # It reconnects with its cursor and ends with exactly the log, no gap, no duplicate.
    resumed = Reader(daemon, status["id"], after=int(frames[-1]["id"]))
    resumed.start()
    resumed.join(timeout=30)
    union = [json.loads(f["data"]) for f in frames + parse_frames(resumed.text)]
    assert union == log


@pytest.fixture
def impatient(data_dir: Path) -> Iterator[Daemon]:
    """A daemon that pings every 0.2 s and cuts a client after 1 s of a stuck write."""
    started = Daemon(data_dir)
    started.env |= {"OD_RUNS_SSE_PING": "0.2", "OD_RUNS_SSE_SEND_TIMEOUT": "1"}
    started.start()
    try:
        yield started
    finally:
        started.stop()


def open_streams(daemon: Daemon) -> int:
    """How many SSE streams the daemon says it serves."""
    with daemon.client() as http:
        return int(http.get("/api/health").json()["openStreams"])


def test_a_quiet_stream_gets_keep_alive_comments(impatient: Daemon, tmp_path: Path) -> None:
    """A run that prints nothing for a while still sends `: ping` comments, so proxies and
    idle timeouts do not close the stream; readers skip them (parse_frames does)."""
    script = tmp_path / "quiet.py"
    script.write_text("import signal\nprint('ready', flush=True)\nsignal.pause()\n")
    run = impatient.create({"agentId": "command", "command": ["python3", str(script)]})
    text = ""
    with (
        impatient.client() as http,
        http.stream("GET", f"/api/runs/{run['id']}/events") as response,
    ):
        deadline = time.monotonic() + 20

        def quiet_pings() -> int:  # pings since the child's last line (it may start slowly)
            return text.rpartition('"ready"')[2].count(": ping\n\n") if '"ready"' in text else 0

        for chunk in response.iter_text():
            text += chunk
            if quiet_pings() >= 2 or time.monotonic() > deadline:
                break
        with impatient.client() as control:
            control.post(f"/api/runs/{run['id']}/cancel")
    assert quiet_pings() >= 2
    assert [f["event"] for f in parse_frames(text)][:2] == ["start", "stdout"]


def test_a_client_that_stops_reading_is_cut_after_the_send_timeout(
    impatient: Daemon, sockets: list[socket.socket]
) -> None:
    """A reader that stops reading while a big log is replayed to it blocks the daemon's
    write; after the send timeout the stream is given up (no task waits on it any more),
    and what the client got is a clean prefix it can resume from."""
    run = impatient.create({"prompt": "big", "demo": {"events": 60_000, "fast": True}})
    status = wait_terminal(impatient, run["id"])
    sock = open_stalled(impatient, run["id"], sockets)
    poll("the stalled stream to open", lambda: open_streams(impatient) == 1)
    poll("the stalled stream to be given up", lambda: open_streams(impatient) == 0)
    text, clean = drain_stalled(sock)
    assert not clean
    frames = parse_frames(text.rpartition("\n\n")[0] + "\n\n")
    log = read_log(status["eventsLogPath"])
    assert 0 < len(frames) < len(log)
    assert [json.loads(f["data"]) for f in frames] == log[: len(frames)]
