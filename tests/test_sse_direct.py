"""Live batches written straight to parked readers' sockets (sse_sink.py), and a listening
socket drained in bursts (accept.py), on a real uvicorn in this process so that the test
can see which path carried the events."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop

from od_runs import fanout
from od_runs.accept import Drain
from od_runs.config import Settings
from od_runs.http_app import Server, create_app

from .conftest import free_port, parse_frames, poll, read_log

# A child that prints `count` lines, `per` at a time every few milliseconds: a busy run
# whose readers sit at its head between batches.
CHILD = r"""
import sys, time
count, per = int(sys.argv[1]), int(sys.argv[2])
for i in range(0, count, per):
    sys.stdout.write("".join("line %d\n" % n for n in range(i, min(count, i + per))))
    sys.stdout.flush()
    time.sleep(0.004)
"""


class InProcess:
    """The daemon's app under the daemon's own Server, in a thread of this process."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(Settings(port=self.port, data_dir=data_dir))
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", loop="uvloop"
        )
        self.server = Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def subscribers(self, run_id: str) -> list[fanout.Subscriber]:
        """The live readers of a run, as the daemon sees them now."""
        run = self.app.state.service.lifecycle.runs.get(run_id)
        return list(run.fanout.subscribers) if run is not None else []


@contextmanager
def in_process(tmp_path: Path) -> Iterator[InProcess]:
    """Start the server, wait until it listens, stop it afterwards."""
    daemon = InProcess(tmp_path / "data")
    daemon.thread.start()
    poll("server started", lambda: daemon.server.started, deadline=20)
    try:
        yield daemon
    finally:
        daemon.server.should_exit = True
        daemon.thread.join(30)


def start_child(url: str, count: int, per: int) -> dict[str, Any]:
    """A command run of the child above."""
    body = {"agentId": "command", "command": [sys.executable, "-c", CHILD, str(count), str(per)]}
    response = httpx.post(f"{url}/api/runs", json={**body, "prompt": "direct"}, timeout=30)
    response.raise_for_status()
    run: dict[str, Any] = response.json()
    return run


def request(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def read_chunked_body(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one chunked HTTP response: its decoded body, and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    assert b"transfer-encoding: chunked" in head.lower()
    body = b""
    while True:
        while b"\r\n" not in rest:
            more = sock.recv(65536)
            assert more, "the connection closed inside the body"
            rest += more
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            more = sock.recv(65536)
            assert more, "the connection closed inside a chunk"
            rest += more
        if size == 0:
            return body, rest[2:]
        assert rest[size : size + 2] == b"\r\n", "a chunk is not followed by CRLF"
        body += rest[:size]
        rest = rest[size + 2 :]


def test_parked_readers_get_live_batches_written_for_them_and_every_event_once(
    tmp_path: Path,
) -> None:
    """Invariant 5 on the direct path: twelve readers that caught up are written each
    batch by the publisher, and each stream is still the log, once and in order."""
    with in_process(tmp_path) as daemon:
        run = start_child(daemon.url, count=20_000, per=20)
        results: dict[int, bytes] = {}
        direct: list[int] = []

        def follow(n: int) -> None:
            with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
                sock.sendall(request(daemon.port, f"/api/runs/{run['id']}/events?after=0"))
                results[n], _ = read_chunked_body(sock)

        readers = [threading.Thread(target=follow, args=(n,)) for n in range(12)]
        for reader in readers:
            reader.start()

        def writing() -> bool:
            counts = [s.direct_writes for s in daemon.subscribers(run["id"])]
            direct[:] = counts
            return len(counts) == 12 and all(c > 0 for c in counts)

        poll("every reader parked and written to directly", writing)
        for reader in readers:
            reader.join(120)
        status = httpx.get(f"{daemon.url}/api/runs/{run['id']}").json()
    log = read_log(status["eventsLogPath"])
    assert status["status"] == "succeeded"
    assert len(results) == 12
    for body in results.values():
        frames = parse_frames(body.decode())
        assert [json.loads(f["data"]) for f in frames] == log
    assert all(c > 0 for c in direct)


def test_a_stream_ended_by_a_direct_write_leaves_its_connection_usable(tmp_path: Path) -> None:
    """Nothing follows the stream's last chunk: the same keep-alive connection answers the
    next request."""
    with in_process(tmp_path) as daemon:
        run = start_child(daemon.url, count=400, per=4)
        with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
            sock.sendall(request(daemon.port, f"/api/runs/{run['id']}/events?after=0"))
            body, after = read_chunked_body(sock)
            assert after == b""  # no stray bytes behind the terminating chunk
            sock.sendall(request(daemon.port, "/api/health"))
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                more = sock.recv(65536)
                assert more, "the server closed the kept-alive connection"
                reply += more
    frames = parse_frames(body.decode())
    assert [int(f["id"]) for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["event"] == "end"
    assert reply.startswith(b"HTTP/1.1 200")


def test_a_reader_that_stops_reading_is_dropped_and_the_others_keep_the_direct_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 10: a client that stops reading fills its socket, so the publisher stops
    writing to it directly; its backlog grows to the limit and it is dropped, while the
    readers that keep reading get every event."""
    monkeypatch.setattr(fanout, "SUBSCRIBER_LIMIT", 256 * 1024)
    with in_process(tmp_path) as daemon:
        run = start_child(daemon.url, count=100_000, per=250)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", daemon.port))
        stalled.sendall(request(daemon.port, f"/api/runs/{run['id']}/events?after=0"))
        results: list[bytes] = []

        def follow() -> None:
            with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
                sock.sendall(request(daemon.port, f"/api/runs/{run['id']}/events?after=0"))
                results.append(read_chunked_body(sock)[0])

        readers = [threading.Thread(target=follow) for _ in range(3)]
        for reader in readers:
            reader.start()
        poll("four readers attached", lambda: len(daemon.subscribers(run["id"])) == 4)
        # The stalled reader is dropped while the run still streams; the others stay.
        poll("the stalled reader dropped", lambda: len(daemon.subscribers(run["id"])) == 3)
        for reader in readers:
            reader.join(120)
        stalled.settimeout(30)
        tail = b""
        while chunk := stalled.recv(1 << 20):  # the server hung up: the read ends
            tail += chunk
        stalled.close()
        status = httpx.get(f"{daemon.url}/api/runs/{run['id']}").json()
    log = read_log(status["eventsLogPath"])
    assert len(results) == 3
    for body in results:
        assert [json.loads(f["data"]) for f in parse_frames(body.decode())] == log
    assert b"event: end" not in tail  # it was cut off, and resumes from its Last-Event-ID


def test_a_drain_accepts_a_whole_backlog_in_one_wake_up() -> None:
    """Under uvloop, a listening socket with a hundred waiting connections is emptied by
    the drain in a few passes, and each connection gets the server's protocol."""

    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        served: list[bytes] = []

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport: Any = transport

            def data_received(self, data: bytes) -> None:
                served.append(data)
                self.transport.write(b"ok:" + data)

        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=512)
        port = server.sockets[0].getsockname()[1]
        drain = Drain(server.sockets[0], Echo)
        clients = []
        for n in range(100):  # connected in the kernel before the loop runs again
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"%d" % n)
            sock.setblocking(False)
            clients.append(sock)
        for _ in range(200):
            if len(served) == 100:
                break
            await asyncio.sleep(0.01)
        answers = [await loop.sock_recv(sock, 64) for sock in clients]
        for sock in clients:
            sock.close()
        drain.close()
        server.close()
        ok = sum(1 for n, a in enumerate(answers) if a == b"ok:%d" % n)
        return len(served), ok, drain.accepted

    served, ok, accepted = uvloop.run(main())
    assert served == 100 and ok == 100
    assert accepted > 50  # the drain, not the loop's one-per-pass accept, took the crowd
