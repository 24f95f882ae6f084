"""Fan-out: 500 SSE clients on one run that emits 2,000 events/s.

Figure: p99 delivery latency (an event's `ts`, stamped when the daemon writes it, to the
moment a client's read returns it) and whether every client got every event.
Baseline: the same measurement with a single client.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time

import httpx
import uvloop

from common import Figure, create_run, daemon, percentile, report, ts_epoch, wait_terminal
from sse_read import LatencyReader, connect_readers

CLIENTS = 500
RATE = 2000
SECONDS = 20.0
TS = re.compile(rb'"ts":"([^"]{24})"')


def _daemon_ts(whole: bytes) -> float | None:
    """The daemon's `ts` of the first event of a read."""
    first = TS.search(whole)
    return ts_epoch(first.group(1)) if first else None


async def fan_out(port: int, run_id: str, clients: int, after: int) -> list[LatencyReader]:
    """Connect all clients, then note the time from which latency counts."""
    began = time.monotonic()
    # Events stamped once everyone is connected and streaming (plus a beat) are measured.
    readers = await connect_readers(port, run_id, after, clients, _daemon_ts)
    if os.environ.get("BENCH_VERBOSE"):
        print(f"connected and streaming after {time.monotonic() - began:.2f} s", file=sys.stderr)
    for reader in readers:
        await asyncio.wait_for(reader.done.wait(), timeout=SECONDS * 5 + 60)
    return readers


def measure(url: str, port: int, clients: int) -> tuple[float, bool, int]:
    """p99 latency in ms, whether every client got every event, and the events per client."""
    events = int(RATE * SECONDS)
    with httpx.Client(base_url=url, timeout=60) as http:
        run = create_run(
            http, agentId="demo", prompt="fan", demo={"events": events, "durationSeconds": SECONDS}
        )
        # Viewers join a live run at its head, as a page opened now does; joining at 0 would
        # measure 500 replays of a growing log, not fan-out.
        head = http.get(f"/api/runs/{run['id']}").json()["lastEventId"]
        readers = uvloop.run(fan_out(port, run["id"], clients, head))
        status = wait_terminal(http, run["id"])
    expected = status["lastEventId"] - head
    complete = all(c.ended and c.events == expected for c in readers)
    weighted = [lat for c in readers for lat, n in c.samples for _ in range(n)]
    return percentile(weighted, 99) * 1000, complete, expected


def main() -> None:
    """One client first (baseline), then 500."""
    with daemon() as d:
        base, base_ok, _ = measure(d.url, d.port, 1)
        p99, ok, expected = measure(d.url, d.port, CLIENTS)
    report(
        [
            Figure(
                f"fan-out p99 latency, {CLIENTS} SSE clients at {RATE:,} events/s",
                p99,
                "ms",
                "<= 50 ms",
                f"1 client {base:.1f} ms",
                p99 <= 50 and ok,
                f"every client got all {expected:,} events: {'yes' if ok else 'NO'}",
            )
        ]
    )
    assert base_ok


if __name__ == "__main__":
    main()
