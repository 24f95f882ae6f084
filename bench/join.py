"""Joining at the start: many viewers open a busy run from `after=0` while others watch it.

A child prints 2,000 lines/s for 10 s, each line carrying the child's own clock. A few
viewers join early and are live; then 500 (and 1,000) viewers join at `after=0`, as a browser
opening a live run does. Latency is the child's timestamp to the moment a client's read
returns the line, so it covers the whole path (pipe, log, replay or fan-out, socket).

Figures, per size: the slowest viewer's time from its join to live (it reads a line the
child printed after it joined and at most 100 ms before the read: it has caught up), the
p99 of the already-live viewers while the others join, the p99 once everyone is live, and
whether every viewer got every event. Clients run in their own processes (sse_clients.py),
each holding many raw asyncio connections.

Sizes: `python bench/join.py [viewers ...]` (default 500 1000); BENCH_JOIN_SECONDS,
BENCH_JOIN_RATE and BENCH_JOIN_PROCS change the run; BENCH_JOIN_DUMP=FILE writes every
viewer's join, first-byte and live times and every latency sample there as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common import Figure, create_run, daemon, percentile, report, wait_terminal

RATE = float(os.environ.get("BENCH_JOIN_RATE", "2000"))
SECONDS = float(os.environ.get("BENCH_JOIN_SECONDS", "10"))
PROCS = int(os.environ.get("BENCH_JOIN_PROCS", "4"))
LIVE_VIEWERS = 20
LIVE_AT = 0.3  # s after the run starts: these viewers are live before the crowd comes
JOIN_AT = 3.0  # s after the run starts: about 6,000 events of history to catch up on
CLIENTS = Path(__file__).with_name("sse_clients.py")
# Each line is stamped with the child's clock as it is printed.
CHILD = r"""
import sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
out = sys.stdout
start = time.time()
for i in range(int(rate * seconds)):
    delay = start + i / rate - time.time()
    if delay > 0:
        time.sleep(delay)
    out.write("t=%.6f n=%d\n" % (time.time(), i))
    out.flush()
"""


class Clients:
    """A client process (sse_clients.py) that connects viewers of runs at time at."""

    def __init__(self, port: int, runs: list[str], per_run: int, at: float, *extra: str) -> None:
        fd, self.out = tempfile.mkstemp(prefix="od-runs-bench-", suffix=".json")
        os.close(fd)
        args = ["--port", str(port), "--runs", ",".join(runs), "--per-run", str(per_run)]
        args += ["--at", str(at), "--out", self.out, *extra]
        self.proc = subprocess.Popen([sys.executable, str(CLIENTS), *args])

    def result(self) -> dict[str, Any]:
        """Wait for the process and read its JSON."""
        if self.proc.wait() != 0:
            raise RuntimeError(f"client process failed: exit {self.proc.returncode}")
        with open(self.out) as fh:
            result: dict[str, Any] = json.load(fh)
        os.unlink(self.out)
        return result


def p99_ms(samples: list[tuple[float, float, int]], lo: float, hi: float) -> float:
    """p99 latency in ms of the events stamped in [lo, hi), each read weighted by its events."""
    weighted = [lat for stamp, lat, n in samples if lo <= stamp < hi for _ in range(n)]
    return percentile(weighted, 99) * 1000 if weighted else float("nan")


def measure(url: str, port: int, joiners: int) -> dict[str, float | bool | int]:
    """One run: early live viewers, then `joiners` viewers at after=0 from JOIN_AT."""
    child = [sys.executable, "-c", CHILD, str(RATE), str(SECONDS)]
    with httpx.Client(base_url=url, timeout=60) as http:
        run = create_run(http, agentId="command", command=child, prompt="join")
        started = time.time()
        live = Clients(port, [run["id"]], LIVE_VIEWERS, started + LIVE_AT)
        per = [joiners // PROCS + (1 if i < joiners % PROCS else 0) for i in range(PROCS)]
        crowd = [Clients(port, [run["id"]], n, started + JOIN_AT) for n in per if n]
        results = [c.result() for c in [live, *crowd]]
        expected = wait_terminal(http, run["id"])["lastEventId"]
    early, rest = results[0], results[1:]
    joined = [v for r in rest for v in r["viewers"]]
    everyone = joined + early["viewers"]
    complete = all(v[3] and v[2] == expected for v in everyone)
    all_samples = [s for r in results for s in r["samples"]]
    to_live = sorted((v[1] - v[0]) if v[1] else float("inf") for v in joined)
    first_join = min(v[0] for v in joined)
    all_live = max(v[1] if v[1] else float("inf") for v in joined)
    end = started + SECONDS
    if os.environ.get("BENCH_JOIN_DUMP"):  # every sample, to look at by hand
        with open(os.environ["BENCH_JOIN_DUMP"], "w") as fh:
            json.dump({"started": started, "joined": joined, "samples": all_samples}, fh)
    return {
        "max_to_live": to_live[-1],
        "p50_to_live": to_live[len(to_live) // 2],
        # From half a second after the early viewers are all live to the crowd's first join.
        "before": p99_ms(early["samples"], max(v[1] for v in early["viewers"]) + 0.5, first_join),
        "during": p99_ms(early["samples"], first_join, min(all_live, end)),
        # Half a second after the last viewer is live, to the end of the run.
        "steady": p99_ms(all_samples, min(all_live, end) + 0.5, end),
        "complete": complete,
        "expected": expected,
    }


def main() -> None:
    """Each size on one daemon, one run per size."""
    sizes = [int(a) for a in sys.argv[1:] if a.isdigit()] or [500, 1000]
    figures = []
    with daemon() as d:
        for size in sizes:
            m = measure(d.url, d.port, size)
            if os.environ.get("BENCH_VERBOSE"):
                print(size, m, file=sys.stderr)
            live_target, steady_target = (1.0, 50.0) if size <= 500 else (3.0, 80.0)
            ok = bool(m["complete"])
            got = f"every viewer got all {m['expected']:,} events: {'yes' if ok else 'NO'}"
            figures += [
                Figure(
                    f"join at the start, {size} viewers at after=0, slowest join to live",
                    float(m["max_to_live"]),
                    "s",
                    f"<= {live_target:g} s",
                    f"median viewer {m['p50_to_live']:.2f} s",
                    float(m["max_to_live"]) <= live_target,
                    got,
                ),
                Figure(
                    f"join at the start, {size} viewers: p99 of live viewers during the join",
                    float(m["during"]),
                    "ms",
                    "<= 100 ms",
                    f"before the join {m['before']:.1f} ms",
                    float(m["during"]) <= 100,
                    "child's timestamp to client read",
                ),
                Figure(
                    f"join at the start, {size} viewers: p99 once all are live",
                    float(m["steady"]),
                    "ms",
                    f"<= {steady_target:g} ms",
                    f"before the join {m['before']:.1f} ms",
                    float(m["steady"]) <= steady_target and ok,
                    got
                    if m["steady"] == m["steady"]  # not NaN: there was a window to measure
                    else "not every viewer was live half a second before the run ended",
                ),
            ]
    report(figures)


if __name__ == "__main__":
    main()
