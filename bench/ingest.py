"""Ingest: one fast demo run of 200,000 events, log on, one live SSE client.

Figure: events/s from the POST that starts the run to the `end` frame at the client.
Baseline: the same agent's lines piped through `cat` into a file.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import Figure, FrameCounter, daemon, fmt, report

EVENTS = 200_000
TARGET = 100_000


def baseline() -> float:
    """Events/s of `demo_agent --fast | cat > file`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lines"
        started = time.perf_counter()
        subprocess.run(
            f"echo prompt | {sys.executable} -m od_runs.agents.demo_agent --fast "
            f"--events {EVENTS} | cat > {out}",
            shell=True,
            check=True,
        )
        elapsed = time.perf_counter() - started
        assert sum(1 for _ in out.open("rb")) == EVENTS
    return EVENTS / elapsed


def through_daemon(url: str) -> float:
    """Events/s from POST to the end frame on one SSE client."""
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        run = client.post(
            "/api/runs",
            json={"agentId": "demo", "prompt": "bench", "demo": {"events": EVENTS, "fast": True}},
        ).json()
        counter = FrameCounter()
        with client.stream("GET", f"/api/runs/{run['id']}/events") as response:
            for chunk in response.iter_raw(256 * 1024):
                counter.feed(chunk)
                if counter.ended:
                    break
        elapsed = time.perf_counter() - started
    # start + EVENTS agent events + end
    assert counter.events == EVENTS + 2, counter.events
    return (EVENTS + 2) / elapsed


def main() -> None:
    """Best of three of each, so a hiccup of the machine does not decide the figure."""
    base = max(baseline() for _ in range(3))
    with daemon() as d:
        ours = max(through_daemon(d.url) for _ in range(3))
    report(
        [
            Figure(
                "ingest, child stdout to SSE client",
                ours,
                "events/s",
                f">= {fmt(TARGET)} events/s",
                f"cat to a file {fmt(base)} events/s (ratio {ours / base:.2f})",
                ours >= TARGET,
            )
        ]
    )


if __name__ == "__main__":
    main()
