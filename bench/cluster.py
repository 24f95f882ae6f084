"""Several daemons on one PostgreSQL (issue 11): ingest, cross-daemon latency, placement.

It starts its own throwaway PostgreSQL (tests/pg.py's PgServer: initdb into a temp dir, a
free loopback port, fsync off) and three daemons on it with --database-url, plus one daemon on
SQLite for the baselines, and removes them all at the end.

Figures:
- ingest: one fast demo run executed on one daemon, read by an SSE client on another, in
  events/s from the POST to the `end` frame. Baseline: the same on a lone SQLite daemon.
- cross-daemon latency: a child prints its own wall-clock time in each line, 2,000 lines/s;
  100 SSE viewers (in a process of their own) on a daemon that does not execute the run;
  p99 from the child's stamp to a viewer's read. Baseline: the viewers on the executor.
- placement: 1,000 short runs (`true`) posted round-robin across the three daemons; runs/s
  and p99 queue->start (createdAt -> startedAt of the status bodies). Baseline: the same
  posted to the lone SQLite daemon.

Sizes for development: --events, --rate, --seconds, --viewers, --runs, --only a,b,c.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from common import (
    ROOT,
    Daemon,
    Figure,
    FrameCounter,
    create_run,
    fmt,
    percentile,
    report,
    wait_terminal,
)
from sse_read import connect_readers

# PgServer lives with the tests; bench runs from bench/ or the repo root.
sys.path.insert(0, str(ROOT))
from tests.pg import PgServer

WORKERS = ("w1", "w2", "w3")
INGEST_TARGET = 100_000
LATENCY_TARGET_MS = 100
START_TARGET_MS = 200
# POSTs in flight at once during the placement figure, the same for cluster and baseline.
IN_FLIGHT = 24
EMIT = re.compile(rb"emit (\d+\.\d+)")
# The child of the latency figure: each line carries the moment it was written.
PACED_CHILD = """
import sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
out = sys.stdout
start = time.time()
for i in range(int(rate * seconds)):
    due = start + i / rate
    now = time.time()
    if due > now:
        time.sleep(due - now)
    out.write(f"emit {time.time():.6f} {i}\\n")
    out.flush()
"""


@dataclass
class Cluster:
    """The three daemons on one database, by worker id, and the database server."""

    pg: PgServer
    daemons: dict[str, Daemon]

    def other_than(self, worker: str) -> Daemon:
        """A daemon that is not `worker`."""
        return next(d for w, d in self.daemons.items() if w != worker)


def executor(client: httpx.Client, run_id: str, timeout: float = 60) -> str:
    """The workerId of a run once a daemon has claimed it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker = client.get(f"/api/runs/{run_id}").json().get("workerId")
        if worker:
            return str(worker)
        time.sleep(0.005)
    raise TimeoutError(f"no daemon claimed {run_id}")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for one in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = one.cpu_times()
                    # children_*: children it has reaped, such as a finished agent.
                    total += times.user + times.system
                    total += times.children_user + times.children_system
    return total


def postmaster_pid(pg: PgServer) -> int:
    """The postgres server's own pid (it runs under runuser when we are root)."""
    return int((pg.root / "data" / "postmaster.pid").read_text().split()[0])


# (a) ingest ------------------------------------------------------------------------------


def ingest_once(post: Daemon, cluster: Cluster | None, events: int) -> tuple[float, str]:
    """Events/s from POST to the end frame; with a cluster, read on a daemon that does not
    execute the run. Also where the CPU went."""
    body = {"agentId": "demo", "prompt": "bench", "demo": {"events": events, "fast": True}}
    with httpx.Client(base_url=post.url, timeout=300) as client:
        watched = [post]
        if cluster is not None:
            watched = list(cluster.daemons.values())
        pids = {d.url: d.proc.pid for d in watched if d.proc is not None}
        pg_pid = postmaster_pid(cluster.pg) if cluster is not None else None
        before = {url: cpu_seconds([pid]) for url, pid in pids.items()}
        pg_before = cpu_seconds([pg_pid]) if pg_pid else 0.0
        mine = time.process_time()
        started = time.perf_counter()
        run = create_run(client, **body)
        reader = post
        if cluster is not None:
            reader = cluster.other_than(executor(client, run["id"]))
        counter = FrameCounter()
        with (
            httpx.Client(base_url=reader.url, timeout=300) as sse,
            sse.stream("GET", f"/api/runs/{run['id']}/events") as response,
        ):
            for chunk in response.iter_raw(256 * 1024):
                counter.feed(chunk)
                if counter.ended:
                    break
        elapsed = time.perf_counter() - started
        status = wait_terminal(client, run["id"])
    # start + the agent's events + end
    assert counter.events == events + 2, (counter.events, status)
    spent = {url: cpu_seconds([pid]) - before[url] for url, pid in pids.items()}
    if cluster is None:
        where = f"daemon {spent[post.url]:.1f}"
    else:
        runner = cluster.daemons[status["workerId"]].url
        pg_spent = cpu_seconds([pg_pid]) - pg_before if pg_pid else 0.0
        where = (
            f"executor {spent[runner]:.1f}, reader {spent[reader.url]:.1f}, postgres {pg_spent:.1f}"
        )
    where += f", client {time.process_time() - mine:.1f} CPU s in {elapsed:.1f} s"
    return (events + 2) / elapsed, where


def ingest_figure(cluster: Cluster, lone: Daemon, events: int) -> Figure:
    """Best of three of each, so a hiccup of the machine does not decide the figure."""
    base = max(ingest_once(lone, None, events)[0] for _ in range(3))
    tries = [ingest_once(cluster.daemons["w1"], cluster, events) for _ in range(3)]
    ours, where = max(tries)
    return Figure(
        "cluster ingest, one run through PostgreSQL to an SSE client on another daemon",
        ours,
        "events/s",
        f">= {fmt(INGEST_TARGET)} events/s",
        f"one SQLite daemon {fmt(base)} events/s (ratio {ours / base:.2f})",
        ours >= INGEST_TARGET,
        where,
    )


# (b) cross-daemon latency ----------------------------------------------------------------


def _child_stamp(whole: bytes) -> float | None:
    """The child's own wall-clock stamp in the first line of a read."""
    first = EMIT.search(whole)
    return float(first.group(1)) if first else None


async def view(port: int, run_id: str, after: int, clients: int, timeout: float) -> dict[str, Any]:
    """Connect the viewers, measure from once all stream, return what each got."""
    viewers = await connect_readers(port, run_id, after, clients, _child_stamp)
    for viewer in viewers:
        await asyncio.wait_for(viewer.done.wait(), timeout=timeout)
    weighted = [lat for v in viewers for lat, n in v.samples for _ in range(n)]
    return {
        "p99_ms": percentile(weighted, 99) * 1000 if weighted else float("nan"),
        "samples": len(weighted),
        "counts": [v.events for v in viewers],
        "ended": sum(1 for v in viewers if v.ended),
    }


def viewers_main(argv: list[str]) -> None:
    """`cluster.py viewers PORT RUN_ID AFTER CLIENTS TIMEOUT`: print the result as JSON."""
    import uvloop

    port, run_id, after, clients, timeout = argv
    result = uvloop.run(view(int(port), run_id, int(after), int(clients), float(timeout)))
    print(json.dumps(result))


def latency_once(
    cluster: Cluster, rate: float, seconds: float, viewers: int, on_executor: bool
) -> tuple[float, bool, int]:
    """p99 ms from the child's stamp to a viewer, whether every viewer got every event, and
    how many events each should have got."""
    post = cluster.daemons["w1"]
    argv = [sys.executable, "-c", PACED_CHILD, str(rate), str(seconds)]
    with httpx.Client(base_url=post.url, timeout=60) as client:
        run = create_run(client, agentId="command", command=argv, prompt="")
        worker = executor(client, run["id"])
        target = cluster.daemons[worker] if on_executor else cluster.other_than(worker)
        # Viewers join a live run at its head, as a page opened now does.
        deadline = time.monotonic() + 30
        head = 0
        while not head and time.monotonic() < deadline:
            head = client.get(f"/api/runs/{run['id']}").json()["lastEventId"]
            time.sleep(0.01)
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "viewers",
                str(target.port),
                run["id"],
                str(head),
                str(viewers),
                str(seconds * 5 + 60),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        status = wait_terminal(client, run["id"])
    result = json.loads(done.stdout)
    expected = status["lastEventId"] - head
    complete = result["ended"] == viewers and all(n == expected for n in result["counts"])
    if os.environ.get("BENCH_VERBOSE"):
        print(f"executor {worker}, viewers on {target.url}: {result}", file=sys.stderr)
    return result["p99_ms"], complete, expected


def latency_figure(cluster: Cluster, rate: float, seconds: float, viewers: int) -> Figure:
    """Viewers on the executor first (baseline), then on another daemon."""
    base, base_ok, _ = latency_once(cluster, rate, seconds, viewers, on_executor=True)
    p99, ok, expected = latency_once(cluster, rate, seconds, viewers, on_executor=False)
    return Figure(
        f"cross-daemon latency p99, child emit to {viewers} SSE viewers on another daemon "
        f"at {rate:,.0f} events/s",
        p99,
        "ms",
        f"<= {LATENCY_TARGET_MS} ms",
        f"viewers on the executing daemon {base:.1f} ms"
        + ("" if base_ok else " (some viewer MISSED events)"),
        p99 <= LATENCY_TARGET_MS and ok,
        f"every viewer got all {expected:,} events: {'yes' if ok else 'NO'}",
    )


# (c) placement ---------------------------------------------------------------------------


def epoch(iso: str) -> float:
    """Seconds since the epoch of a status body's timestamp."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def post_all(urls: list[str], count: int, project: str) -> None:
    """POST `count` short runs, round-robin over urls, IN_FLIGHT at a time."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    body = {"agentId": "command", "command": ["true"], "prompt": "", "projectId": project}
    clients = [httpx.AsyncClient(base_url=url, timeout=120) for url in urls]

    async def one(i: int) -> None:
        async with gate:
            response = await clients[i % len(clients)].post("/api/runs", json=body)
            response.raise_for_status()

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()


def placement_once(daemons: list[Daemon], count: int, project: str) -> tuple[float, float, str]:
    """runs/s and p99 queue->start ms of `count` short runs posted across daemons."""
    assert count <= 1000, "GET /api/runs lists at most 1,000"
    asyncio.run(post_all([d.url for d in daemons], count, project))
    params: dict[str, str | int] = {"projectId": project, "limit": 1000}
    with httpx.Client(base_url=daemons[-1].url, timeout=60) as client:
        deadline = time.monotonic() + 600
        while True:
            runs = client.get("/api/runs", params=params).json()["runs"]
            done = [r for r in runs if r["status"] in ("succeeded", "failed", "canceled")]
            if len(done) == count:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(done)} of {count} runs ended")
            time.sleep(0.2)
    failed = [r for r in runs if r["status"] != "succeeded"]
    assert not failed, failed[0]
    waits = [(epoch(r["startedAt"]) - epoch(r["createdAt"])) * 1000 for r in runs]
    span = max(epoch(r["finishedAt"]) for r in runs) - min(epoch(r["createdAt"]) for r in runs)
    spread = Counter(r.get("workerId") or "-" for r in runs)
    if os.environ.get("BENCH_VERBOSE"):
        by_worker: dict[str, list[float]] = {}
        for r, wait in zip(runs, waits, strict=True):
            by_worker.setdefault(r.get("workerId") or "-", []).append(wait)
        for worker, some in sorted(by_worker.items()):
            print(
                f"{project} {worker}: queue->start p50 {percentile(some, 50):.0f} ms, "
                f"p99 {percentile(some, 99):.0f} ms, max {max(some):.0f} ms",
                file=sys.stderr,
            )
    where = ", ".join(f"{w} {n}" for w, n in sorted(spread.items()))
    return count / span, percentile(waits, 99), where


def placement_figures(cluster: Cluster, lone: Daemon, count: int) -> list[Figure]:
    """The cluster's figures with the lone SQLite daemon's as baseline."""
    base_rate, base_p99, _ = placement_once([lone], count, "bench-place-lone")
    rate, p99, spread = placement_once(list(cluster.daemons.values()), count, "bench-place")
    return [
        Figure(
            f"cluster placement, {count:,} short runs posted across 3 daemons: queue->start p99",
            p99,
            "ms",
            f"<= {START_TARGET_MS} ms",
            f"one SQLite daemon {base_p99:.1f} ms",
            p99 <= START_TARGET_MS,
            f"executed by {spread}",
        ),
        Figure(
            f"cluster placement, {count:,} short runs posted across 3 daemons: throughput",
            rate,
            "runs/s",
            "",
            f"one SQLite daemon {base_rate:.1f} runs/s",
            None,
            f"{IN_FLIGHT} POSTs in flight",
        ),
    ]


# setup -----------------------------------------------------------------------------------


@contextlib.contextmanager
def started(root: Path) -> Iterator[tuple[Cluster, Daemon]]:
    """PostgreSQL, three daemons on it, and a lone SQLite daemon; all gone afterwards."""
    pg = PgServer()
    daemons: list[Daemon] = []
    try:
        pg.start()
        url = pg.new_database()
        for worker in WORKERS:
            data = root / worker / "runs_log"
            daemons.append(Daemon(data, "--database-url", url, "--worker-id", worker))
        daemons.append(Daemon(root / "lone" / "runs_log"))
        for daemon in daemons:
            daemon.data_dir.parent.mkdir(parents=True, exist_ok=True)
            daemon.start()
        yield Cluster(pg, dict(zip(WORKERS, daemons, strict=False))), daemons[-1]
    finally:
        for daemon in daemons:
            with contextlib.suppress(Exception):
                daemon.stop()
        pg.stop()


def main() -> None:
    """Measure the chosen figures (all by default)."""
    if sys.argv[1:2] == ["viewers"]:
        viewers_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="(a) events of the run")
    parser.add_argument("--rate", type=float, default=2000, help="(b) child lines per second")
    parser.add_argument("--seconds", type=float, default=20, help="(b) how long the child runs")
    parser.add_argument("--viewers", type=int, default=100, help="(b) SSE viewers")
    parser.add_argument("--runs", type=int, default=1000, help="(c) short runs to post")
    parser.add_argument("--only", default="a,b,c", help="which figures: a, b, c")
    parser.add_argument("--tsv", action="store_true", help="tab-separated, for run_all.py")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    root = Path(tempfile.mkdtemp(prefix="od-runs-bench-cluster-"))
    figures: list[Figure] = []
    try:
        with started(root) as (cluster, lone):
            if "a" in chosen:
                figures.append(ingest_figure(cluster, lone, args.events))
            if "b" in chosen:
                figures.append(latency_figure(cluster, args.rate, args.seconds, args.viewers))
            if "c" in chosen:
                figures += placement_figures(cluster, lone, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(figures)


if __name__ == "__main__":
    main()
