"""Scaling: many runs at once, each streaming 100 events/s to two SSE viewers and one MCP client.

For each size (10, 100, 500 runs by default) a fresh daemon starts that many runs whose
children (a small Perl loop, so that 500 of them fit next to the daemon) wait until a go
file appears, then print 100 timestamped lines/s in bursts of 5 for SECONDS. Each run has two
SSE viewers (joined at after=0) and one MCP client over Streamable HTTP parked in `wait_run`
until the run ends (a real JSON-RPC session, the call an outer agent makes), all from client
processes of their own.

Figures per size: p99 delivery latency (the child's stamp to the client's read) over the
streaming window, the daemon's CPU seconds (utime + stime from /proc/<pid>/stat, less what
it burns in the same time with everything in place but quiet) per 100k events logged, the
daemon's peak RSS. The cost per event should stay flat from the smallest
size to the largest (within 25%), and RSS grow at most linearly: the per-run figure is the
slope between the smallest and largest size.

The baseline for the cost is floor.py, a bare relay on the same loop that does only the
syscalls any daemon must (a pipe read, a log write, a socket write per viewer) for the same
children and viewers (no MCP client). Its cost per event falls with load too: on 2 shared
cores a quiet loop pays each wake-up and each write to a sleeping client in full, a busy one
shares them among many events. The ratio of the two says whether the daemon's own work per
event grows with its size.

Sizes: `python bench/scale.py [runs ...]`; BENCH_SCALE_SECONDS sets the streaming time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from common import Daemon, Figure, create_run, free_port, percentile, report, wait_terminal
from join import Clients

SECONDS = float(os.environ.get("BENCH_SCALE_SECONDS", "10"))
RATE = 100
BURST = 5
VIEWERS = 2
PROCS = 4
FLOOR = Path(__file__).with_name("floor.py")
PERL = r"""
use Time::HiRes qw(time sleep);
$| = 1;
my ($go, $rate, $seconds, $burst) = @ARGV;
my $n = int($rate * $seconds);
sleep(0.05) until -e $go;
my $at = time;
for (my $i = 0; $i < $n; $i += $burst) {
    my $due = $at + $i / $rate;
    my $wait = $due - time;
    sleep($wait) if $wait > 0;
    for my $j (0 .. $burst - 1) { printf("t=%.6f n=%d\n", time, $i + $j); }
}
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watched(http: httpx.Client, ids: list[str]) -> None:
    """Wait until every run has its SSE viewers and its MCP client attached."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health = http.get("/api/health").json()
        if health.get("openStreams", 0) >= len(ids) * VIEWERS:
            return
        time.sleep(0.2)
    raise TimeoutError("viewers did not connect")


def settled(pid: int, floor: float = 0.02, limit: float = 20.0) -> None:
    """Wait until the daemon is done setting up: a second in which it used under `floor` of
    a core (the MCP sessions come right behind their run's viewers, and each initializes)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        cpu, at = cpu_seconds(pid), time.monotonic()
        time.sleep(1)
        if (cpu_seconds(pid) - cpu) / (time.monotonic() - at) < floor:
            return


def child(go: Path) -> list[str]:
    """A run's child: waits for go, then prints RATE lines/s in bursts of BURST."""
    return ["perl", "-e", PERL, str(go), str(RATE), str(SECONDS), str(BURST)]


def lines_per_run() -> int:
    """What each child prints: whole bursts, the last one complete."""
    n = int(RATE * SECONDS)
    return -(-n // BURST) * BURST


def streamed(
    pid: int, port: int, http: httpx.Client, ids: list[str], go: Path, *extra: str
) -> tuple[float, float, float, list[dict[str, Any]]]:
    """Connect every run's clients, wait till the server is quiet, let the children stream.

    Returns the server's CPU seconds for the streaming, less what it burns in the same time
    with everything in place but quiet (timers, the status writer), so the figure is the cost
    of events; that quiet rate; the wall-clock time streaming began; the clients' results.
    """
    parts = [ids[i::PROCS] for i in range(PROCS) if ids[i::PROCS]]
    clients = [Clients(port, part, VIEWERS, 0, *extra) for part in parts]
    watched(http, ids)
    settled(pid)
    quiet_cpu, quiet_from = cpu_seconds(pid), time.monotonic()
    time.sleep(3)
    idle_rate = (cpu_seconds(pid) - quiet_cpu) / (time.monotonic() - quiet_from)
    cpu_start, cpu_from = cpu_seconds(pid), time.monotonic()
    at = time.time()
    go.touch()
    results = [c.result() for c in clients]
    cpu = cpu_seconds(pid) - cpu_start - idle_rate * (time.monotonic() - cpu_from)
    return cpu, idle_rate, at, results


def measure(runs: int) -> dict[str, float | bool]:
    """One size on a fresh daemon."""
    data = Path(tempfile.mkdtemp(prefix="od-runs-bench-"))
    d = Daemon(data / "runs_log").start()
    assert d.proc is not None
    try:
        idle_rss = d.rss_mb()
        # Children wait for the go file, so every run is created and watched before any
        # of them streams.
        go = data / "go"
        with httpx.Client(base_url=d.url, timeout=120) as http:
            ids = [
                create_run(http, agentId="command", command=child(go), prompt="s")["id"]
                for _ in range(runs)
            ]
            peak = [0.0]
            stop = threading.Event()

            def sample_rss() -> None:
                while not stop.wait(0.5):
                    peak[0] = max(peak[0], d.rss_mb())

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            cpu, idle_rate, at, results = streamed(d.proc.pid, d.port, http, ids, go, "--mcp")
            stop.set()
            statuses = [wait_terminal(http, run_id) for run_id in ids]
        events = sum(s["lastEventId"] for s in statuses)
        expected = {s["id"]: s["lastEventId"] for s in statuses}
        viewers = [v for r in results for v in r["viewers"]]
        complete = len(viewers) == runs * VIEWERS and all(
            v[3] and v[2] in expected.values() for v in viewers
        )
        mcp = [m for r in results for m in r["mcp"]]
        mcp_ok = len(mcp) == runs and all(m[2] for m in mcp)
        samples = [s for r in results for s in r["samples"] if at + 1 <= s[0] < at + SECONDS]
        weighted = [lat for _, lat, n in samples for _ in range(n)]
        return {
            "p99": percentile(weighted, 99) * 1000,
            "cpu_per_100k": cpu / events * 100_000,
            "idle_cpu": idle_rate,
            "rss": peak[0],
            "idle_rss": idle_rss,
            "complete": complete and mcp_ok,
        }
    finally:
        d.stop()
        shutil.rmtree(data, ignore_errors=True)


def measure_floor(runs: int) -> float:
    """CPU seconds per 100k events of floor.py (a bare relay) streaming the same runs to the
    same viewers: what the pipe reads, log writes and socket writes cost on this machine."""
    data = Path(tempfile.mkdtemp(prefix="od-runs-floor-"))
    go, port = data / "go", free_port()
    command = [sys.executable, str(FLOOR), "--port", str(port), "--runs", str(runs), "--"]
    proc = subprocess.Popen([*command, *child(go)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the floor relay did not start")
        ids = [f"f{i}" for i in range(runs)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            cpu, _, _, results = streamed(proc.pid, port, http, ids, go)
        lines = lines_per_run()
        viewers = [v for r in results for v in r["viewers"]]
        if len(viewers) != runs * VIEWERS or not all(v[3] and v[2] == lines + 1 for v in viewers):
            raise RuntimeError("the floor relay lost events")
        return cpu / (runs * lines) * 100_000
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    """Each size on its own daemon, smallest first (its cost is the baseline)."""
    sizes = sorted(int(a) for a in sys.argv[1:] if a.isdigit()) or [10, 100, 500]
    results = {n: measure(n) for n in sizes}
    floors = {n: measure_floor(n) for n in sizes}
    if os.environ.get("BENCH_VERBOSE"):
        print(results, file=sys.stderr)
    small, large = sizes[0], sizes[-1]
    base_cpu = float(results[small]["cpu_per_100k"])
    per_run = (
        (float(results[large]["rss"]) - float(results[small]["rss"])) / (large - small)
        if large > small
        else 0.0
    )
    figures = []
    for n in sizes:
        m = results[n]
        cpu = float(m["cpu_per_100k"])
        label = f"scale, {n} runs x {RATE} events/s, 2 SSE + 1 MCP wait_run each"
        ok = "every viewer and MCP client got the whole run: " + ("yes" if m["complete"] else "NO")
        figures += [
            Figure(f"{label}: p99 latency", float(m["p99"]), "ms", "reported", "", None, ok),
            Figure(
                f"{label}: daemon CPU per 100k events",
                cpu,
                "s",
                f"within 25% of {small} runs",
                f"{small} runs {base_cpu:.2f} s",
                abs(cpu - base_cpu) <= 0.25 * base_cpu and bool(m["complete"]),
            ),
            Figure(
                f"{label}: daemon CPU per event over a bare relay's",
                cpu / floors[n],
                "x",
                "reported",
                f"bare relay {floors[n]:.2f} s per 100k events",
            ),
            Figure(
                f"{label}: daemon RSS",
                float(m["rss"]),
                "MB",
                "linear in runs",
                f"idle daemon {float(m['idle_rss']):.0f} MB",
                None,
                f"{per_run * 1024:.0f} KB per run from {small} to {large} runs"
                if n == large and large > small
                else "",
            ),
        ]
    report(figures)


if __name__ == "__main__":
    main()
