"""Replay and seek on finished runs.

Figures: events/s for one client reading a 1,000,000-event run from cursor 0 (baseline: `cat`
of its log to /dev/null), and the time to the first event for a cursor 10 events before the
end of runs of 10k, 100k and 1M events (baseline: a GET /api/health round trip).
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

import httpx

from common import (
    Figure,
    FrameCounter,
    create_run,
    daemon,
    first_event_ms,
    fmt,
    report,
    wait_terminal,
)

SIZES = (10_000, 100_000, 1_000_000)
REPLAY_TARGET = 300_000
SEEK_TARGET_MS = 20.0
SEEK_TRIES = 30


def make_run(client: httpx.Client, events: int) -> dict[str, Any]:
    """A finished fast demo run of `events` agent events (+ start and end)."""
    run = create_run(client, agentId="demo", prompt="bench", demo={"events": events, "fast": True})
    return wait_terminal(client, run["id"])


def replay_rate(client: httpx.Client, run: dict[str, Any]) -> float:
    """Events/s reading the whole run over SSE from cursor 0."""
    counter = FrameCounter()
    started = time.perf_counter()
    with client.stream("GET", f"/api/runs/{run['id']}/events") as response:
        for chunk in response.iter_raw(1 << 20):
            counter.feed(chunk)
    elapsed = time.perf_counter() - started
    assert counter.events == run["lastEventId"], (counter.events, run["lastEventId"])
    return counter.events / elapsed


def seek_ms(client: httpx.Client, run: dict[str, Any]) -> float:
    """Median ms from request to the first event frame for a cursor 10 before the end."""
    cursor = run["lastEventId"] - 10
    path = f"/api/runs/{run['id']}/events?after={cursor}"
    return statistics.median(first_event_ms(client, path) for _ in range(SEEK_TRIES))


def health_ms(client: httpx.Client) -> float:
    """Median ms of a GET /api/health round trip."""
    times = []
    for _ in range(SEEK_TRIES):
        started = time.perf_counter()
        client.get("/api/health").raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def cat_rate(run: dict[str, Any]) -> float:
    """Events/s of `cat events.jsonl > /dev/null`."""
    started = time.perf_counter()
    subprocess.run(["cat", run["eventsLogPath"]], stdout=subprocess.DEVNULL, check=True)
    return float(run["lastEventId"]) / (time.perf_counter() - started)


def main() -> None:
    """Build the runs once, then measure replay and seek on them."""
    figures = []
    with daemon() as d, httpx.Client(base_url=d.url, timeout=300) as client:
        runs = {size: make_run(client, size) for size in SIZES}
        big = runs[SIZES[-1]]
        rate = max(replay_rate(client, big) for _ in range(3))
        base = max(cat_rate(big) for _ in range(3))
        figures.append(
            Figure(
                "replay of a 1M-event run from cursor 0",
                rate,
                "events/s",
                f">= {fmt(REPLAY_TARGET)} events/s",
                f"cat of the log {fmt(base)} events/s",
                rate >= REPLAY_TARGET,
            )
        )
        rtt = health_ms(client)
        for size, run in runs.items():
            ms = seek_ms(client, run)
            figures.append(
                Figure(
                    f"seek to 10 before the end, {size:,}-event run",
                    ms,
                    "ms",
                    f"<= {SEEK_TARGET_MS:.0f} ms",
                    f"health round trip {rtt:.2f} ms",
                    ms <= SEEK_TARGET_MS,
                )
            )
    report(figures)


if __name__ == "__main__":
    main()
