"""The floor under the scale curve: a bare relay doing the least any daemon must do.

`python floor.py --port P --runs N -- CHILD...` starts N copies of CHILD (the scale bench's
children, waiting for their go file) and serves
`GET /api/runs/f<i>/events` and `GET /api/health` the way the bench clients expect. For each
read of a child's pipe it appends the read's lines to that run's log file as JSON and writes
them as SSE frames to the run's viewers: one pipe read, one file write and one socket write
per viewer, on the daemon's event loop (uvloop), and nothing else. No HTTP framework, no
store, no watchdog, no MCP.

What it costs per event at each size is what those syscalls and the wake-ups they cause cost
on this machine; the scale bench reports it next to the daemon's own figure. The relay exits
once every child has ended and every viewer has been sent `end`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import uvloop

HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"


class Relay:
    """The runs, their logs and their viewers."""

    def __init__(self, runs: int, log_dir: str) -> None:
        self.viewers: list[list[asyncio.BaseTransport]] = [[] for _ in range(runs)]
        self.logs = [
            os.open(os.path.join(log_dir, f"f{i}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            for i in range(runs)
        ]
        self.next_id = [1] * runs
        self.left = runs
        self.done = asyncio.Event()

    def open_streams(self) -> int:
        """Viewers connected now."""
        return sum(len(v) for v in self.viewers)

    def relay(self, run: int, fd: int) -> None:
        """A read of run's pipe: log its lines, frame them, write them to every viewer."""
        chunk = os.read(fd, 65536)
        if not chunk:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
            self.send(run, f"id: {self.next_id[run]}\nevent: end\ndata: {{}}\n\n".encode())
            for transport in self.viewers[run]:
                transport.close()
            self.left -= 1
            if not self.left:
                self.done.set()
            return
        log, frames = [], []
        for line in chunk.decode().splitlines():
            n = self.next_id[run]
            self.next_id[run] = n + 1
            event = json.dumps({"id": n, "event": "output", "data": {"text": line}})
            log.append(event + "\n")
            frames.append(f"id: {n}\nevent: output\ndata: {event}\n\n")
        os.write(self.logs[run], "".join(log).encode())
        self.send(run, "".join(frames).encode())

    def send(self, run: int, data: bytes) -> None:
        """One write of data to each viewer of run."""
        for transport in self.viewers[run]:
            transport.write(data)  # type: ignore[attr-defined]


class Request(asyncio.Protocol):
    """One HTTP connection: /api/health answers and closes, an events GET becomes a viewer."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, chunk: bytes) -> None:
        self.buffer += chunk
        if b"\r\n\r\n" not in self.buffer:
            return
        path = self.buffer.split(b" ", 2)[1].decode()
        self.buffer = b""
        if path.startswith("/api/health"):
            body = json.dumps({"openStreams": self.relay.open_streams()}).encode()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
            self.transport.close()
            return
        run = int(path.split("/")[3].removeprefix("f"))
        self.transport.write(HEADERS)
        self.relay.viewers[run].append(self.transport)


async def serve(port: int, pipes: list[int]) -> None:
    """Relay each child's pipe until every run has ended."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="od-runs-floor-") as log_dir:
        relay = Relay(len(pipes), log_dir)
        server = await loop.create_server(lambda: Request(relay), "127.0.0.1", port)
        for run, fd in enumerate(pipes):
            os.set_blocking(fd, False)
            loop.add_reader(fd, relay.relay, run, fd)
        print("ready", flush=True)
        await relay.done.wait()
        server.close()


def main() -> None:
    """Start the children, relay them, reap them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("child", nargs="+", help="the child command, after --")
    args = parser.parse_args()
    procs, pipes = [], []
    for _ in range(args.runs):
        proc = subprocess.Popen(args.child, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        pipes.append(os.dup(proc.stdout.fileno()))
        proc.stdout.close()
        procs.append(proc)
    uvloop.run(serve(args.port, pipes))
    for proc in procs:
        proc.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
