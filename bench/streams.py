"""Many open streams: 5,000 SSE connections on 100 quiet runs (pings only).

Each run's child just sleeps, so the streams carry nothing but keep-alive pings, sent every
PING seconds here (OD_RUNS_SSE_PING) instead of 15 so that a few rounds fit the bench.
Figures: the daemon's RSS with every stream open, and what a ping round costs the event
loop: the worst round trip of a status request made every 10 ms during a few rounds (the
lag a user sees), next to the same without streams. The note gives the daemon's CPU time
per round (over the rounds, less its idle rate): what one pass would cost if every stream
pinged at once, which the random first wait of each stream prevents.

Size: `python bench/streams.py [connections [runs]]` (default 5000 100).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from common import Daemon, Figure, create_run, percentile, report
from join import Clients
from scale import cpu_seconds

PING = 2.0
ROUNDS = 3
PROCS = 5


def probe(url: str, path: str, seconds: float) -> list[float]:
    """ms of GET path every 10 ms for seconds, on one kept-alive connection."""
    times = []
    with httpx.Client(base_url=url, timeout=30) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            http.get(path).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    return times


def measure(connections: int, runs: int) -> dict[str, float]:
    """Open the streams on a fresh daemon, then watch a few ping rounds."""
    os.environ["OD_RUNS_SSE_PING"] = str(PING)
    data = Path(tempfile.mkdtemp(prefix="od-runs-bench-"))
    d = Daemon(data / "runs_log").start()
    assert d.proc is not None
    clients: list[Clients] = []
    try:
        with httpx.Client(base_url=d.url, timeout=120) as http:
            ids = [
                create_run(http, agentId="command", command=["sleep", "600"], prompt="q")["id"]
                for _ in range(runs)
            ]
            path = f"/api/runs/{ids[0]}"
            idle_started, idle_cpu = time.monotonic(), cpu_seconds(d.proc.pid)
            base = probe(d.url, path, ROUNDS * PING)
            idle_rate = (cpu_seconds(d.proc.pid) - idle_cpu) / (time.monotonic() - idle_started)
            rss_before = d.rss_mb()
            per_run = connections // runs
            parts = [ids[i::PROCS] for i in range(PROCS) if ids[i::PROCS]]
            hold = ["--hold", "3600"]
            clients = [Clients(d.port, part, per_run, 0, *hold) for part in parts]
            deadline = time.monotonic() + 300
            while http.get("/api/health").json()["openStreams"] < per_run * runs:
                if time.monotonic() > deadline:
                    raise TimeoutError("streams did not open")
                time.sleep(0.5)
            opened = http.get("/api/health").json()["openStreams"]
            time.sleep(PING)  # let the rounds settle into their rhythm
            started, cpu = time.monotonic(), cpu_seconds(d.proc.pid)
            lags: list[float] = []
            prober = threading.Thread(
                target=lambda: lags.extend(probe(d.url, path, ROUNDS * PING)), daemon=True
            )
            prober.start()
            prober.join()
            elapsed = time.monotonic() - started
            busy = cpu_seconds(d.proc.pid) - cpu - idle_rate * elapsed
            rss = d.rss_mb()
        return {
            "streams": opened,
            "rss": rss,
            "rss_before": rss_before,
            "round_ms": max(0.0, busy) / (elapsed / PING) * 1000,
            "lag_max": max(lags),
            "lag_p99": percentile(lags, 99),
            "base_max": max(base),
        }
    finally:
        for c in clients:
            c.proc.terminate()
            c.proc.wait()
            Path(c.out).unlink(missing_ok=True)
        d.stop()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    """One daemon, one size."""
    numbers = [int(a) for a in sys.argv[1:] if a.isdigit()]
    connections = numbers[0] if numbers else 5000
    runs = numbers[1] if len(numbers) > 1 else 100
    m = measure(connections, runs)
    if os.environ.get("BENCH_VERBOSE"):
        print(m, file=sys.stderr)
    label = f"{int(m['streams']):,} SSE streams open on {runs} quiet runs"
    report(
        [
            Figure(
                f"{label}: daemon RSS",
                m["rss"],
                "MB",
                "<= 400 MB",
                f"no streams {m['rss_before']:.0f} MB",
                m["rss"] <= 400,
                f"{(m['rss'] - m['rss_before']) * 1024 / max(m['streams'], 1):.0f} KB per stream",
            ),
            Figure(
                f"{label}: loop lag during ping rounds (status round trip, max)",
                m["lag_max"],
                "ms",
                "<= 50 ms",
                f"no streams: max {m['base_max']:.1f} ms",
                m["lag_max"] <= 50,
                f"p99 {m['lag_p99']:.1f} ms; a round takes {m['round_ms']:.0f} ms of CPU, "
                f"spread over the {PING:g} s between pings",
            ),
        ]
    )


if __name__ == "__main__":
    main()
