"""Bench clients in their own process: raw HTTP/1.1 SSE viewers and MCP `wait_run` callers.

`python sse_clients.py --port P --runs A,B --per-run N --at T --out F [--mcp] [--hold S]`
connects N SSE viewers of each run at wall-clock time T (and, with --mcp, one MCP client per
run parked in `wait_run`), follows them to the runs' ends (or for S seconds with --hold) and
writes JSON to F: per viewer its join time, the time it was live (read a line the child
printed after the join and at most CAUGHT_UP ago), its event count and whether it got `end`;
latency samples (child's stamp, latency, events of the read) once live; per MCP client when
its answer came.

It imports only asyncio and uvloop (and json) so that several start fast next to the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import uvloop

from sse_read import FrameReader, Read, factory

STAMP = re.compile(rb"t=(\d+\.\d+)")
# A viewer is live once it reads a line printed after its join and at most this long ago:
# it has caught up with the child, not merely reached the part of the run after its join.
CAUGHT_UP = 0.1


class Viewer(FrameReader):
    """One SSE reader; counts events and samples latency once it is live."""

    def __init__(self, request: bytes, samples: list[tuple[float, float, int]]) -> None:
        super().__init__(request)
        self.samples = samples
        self.joined = 0.0
        self.first = 0.0
        self.headers = 0.0
        self.live = 0.0

    def data_received(self, chunk: bytes) -> None:
        if not self.headers:
            self.headers = time.time()
        super().data_received(chunk)

    def on_frames(self, read: Read, count: int, now: float) -> None:
        if not self.first:
            self.first = now
        if not self.live:
            last = read.last(STAMP, b"t=")
            if last is not None:
                stamp = float(last.group(1))
                if stamp >= self.joined and now - stamp <= CAUGHT_UP:
                    self.live = now  # caught up with the child
            return  # this read still carries history: no latency sample
        first = read.first(STAMP)
        if first is not None:
            # The oldest line of a read waited longest; charging it to every event of the
            # read over-states the tail, never under-states it.
            stamp = float(first.group(1))
            self.samples.append((stamp, now - stamp, count))


class McpWaiter(asyncio.Protocol):
    """One MCP client over Streamable HTTP: initialize, then one `wait_run` until the end."""

    def __init__(self, port: int, run_id: str) -> None:
        self.port = port
        self.run_id = run_id
        self.buffer = b""
        self.answered = 0.0
        self.ok = False
        self.step = 0
        self.done = asyncio.Event()

    def post(self, body: dict[str, Any], session: str = "") -> None:
        data = json.dumps(body).encode()
        extra = f"mcp-session-id: {session}\r\nmcp-protocol-version: 2025-11-25\r\n"
        self.transport.write(
            (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Content-Type: application/json\r\n"
                "Accept: application/json, text/event-stream\r\n"
                f"{extra if session else ''}Content-Length: {len(data)}\r\n\r\n"
            ).encode()
            + data
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}}
        hello["clientInfo"] = {"name": "bench", "version": "0"}
        self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello})

    def data_received(self, chunk: bytes) -> None:
        self.buffer += chunk
        if self.step == 0 and b'"id":0' in self.buffer and b"\r\n\r\n" in self.buffer:
            found = re.search(rb"(?i)mcp-session-id: *([^\r\n]+)", self.buffer)
            session = found.group(1).decode() if found else ""
            self.step, self.buffer = 1, b""
            self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
            call = {"name": "wait_run", "arguments": {"runId": self.run_id, "timeoutSeconds": 50}}
            self.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}, session)
        elif self.step == 1 and b'"id":1' in self.buffer:
            self.answered = time.time()
            self.ok = b'"done":true' in self.buffer.replace(b" ", b"")
            self.step = 2
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()


async def clients(
    port: int, runs: list[str], per_run: int, at: float, after: str, mcp: bool, hold: float
) -> dict[str, Any]:
    """Connect the viewers (and MCP clients) at wall-clock time at; follow them to the end."""
    loop = asyncio.get_running_loop()
    samples: list[tuple[float, float, int]] = []
    await asyncio.sleep(max(0.0, at - time.time()))
    readers: list[Viewer] = []
    waiters: list[McpWaiter] = []
    for run_id in runs:
        request = (
            f"GET /api/runs/{run_id}/events?after={after} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        for _ in range(per_run):
            reader = Viewer(request, samples)
            reader.joined = time.time()
            await loop.create_connection(factory(reader), "127.0.0.1", port)
            readers.append(reader)
        if mcp:
            waiter = McpWaiter(port, run_id)
            await loop.create_connection(factory(waiter), "127.0.0.1", port)
            waiters.append(waiter)
    connected = time.time()
    if hold:
        await asyncio.sleep(hold)
        for reader in readers:
            reader.transport.close()
    for done in [r.done for r in readers] + [w.done for w in waiters]:
        await asyncio.wait_for(done.wait(), timeout=3600)
    return {
        "connected": connected,
        "viewers": [[r.joined, r.live, r.events, r.ended, r.first, r.headers] for r in readers],
        "samples": samples,
        "mcp": [[w.run_id, w.answered, w.ok] for w in waiters],
    }


def main() -> None:
    """Run the clients and write what they saw to --out."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runs", required=True, help="comma-separated run ids")
    parser.add_argument("--per-run", type=int, default=1)
    parser.add_argument("--at", type=float, default=0.0, help="wall-clock time to connect")
    parser.add_argument("--out", required=True)
    parser.add_argument("--after", default="0")
    parser.add_argument("--mcp", action="store_true", help="one MCP wait_run client per run")
    parser.add_argument("--hold", type=float, default=0.0, help="hang up after this many s")
    args = parser.parse_args()
    result = uvloop.run(
        clients(
            args.port,
            args.runs.split(","),
            args.per_run,
            args.at,
            args.after,
            args.mcp,
            args.hold,
        )
    )
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
