"""Shared bench parts: a real daemon on loopback, SSE readers, and figure printing.

Each bench script prints one figure per line. With `--tsv` it prints the same figures as
tab-separated fields for `run_all.py`, which rewrites the README's performance table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TS_RE = re.compile(rb'"ts":"([^"]+)"')


@dataclass
class Figure:
    """One measured number with its target and the baseline measured in the same run."""

    name: str
    value: float
    unit: str
    target: str
    baseline: str = ""
    met: bool | None = None
    note: str = ""


def report(figures: list[Figure]) -> None:
    """Print figures, readable by default, tab-separated with --tsv."""
    if "--tsv" in sys.argv:
        for f in figures:
            met = "" if f.met is None else ("yes" if f.met else "no")
            print("\t".join([f.name, fmt(f.value), f.unit, f.target, f.baseline, met, f.note]))
        return
    for f in figures:
        verdict = "" if f.met is None else ("  [met]" if f.met else "  [MISSED]")
        extra = f"; baseline {f.baseline}" if f.baseline else ""
        note = f"  ({f.note})" if f.note else ""
        print(f"{f.name}: {fmt(f.value)} {f.unit}  (target {f.target}{extra}){verdict}{note}")


def fmt(value: float) -> str:
    """Thousands separators for big numbers, two decimals for small ones."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ts_epoch(ts: bytes, cache: dict[bytes, float] = {}) -> float:  # noqa: B006 - a cache
    """Seconds since the epoch of an event's ts; many events share a millisecond."""
    value = cache.get(ts)
    if value is None:
        value = datetime.fromisoformat(ts.decode().replace("Z", "+00:00")).timestamp()
        cache[ts] = value
    return value


class Daemon:
    """`od-runs serve` in a subprocess with a scratch data dir."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        """Start and wait for /api/health."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "od_runs",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.extra,
            ],
            env={**os.environ, "OD_RUNS_LOG_LEVEL": "warning"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL,
        )
        if os.environ.get("BENCH_VERBOSE"):
            print(f"daemon pid {self.proc.pid}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not start")

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def rss_mb(self) -> float:
        """Resident memory of the daemon process in MB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


@contextmanager
def daemon() -> Iterator[Daemon]:
    """A started daemon on a scratch data dir, stopped and removed afterwards."""
    data = Path(tempfile.mkdtemp(prefix="od-runs-bench-"))
    d = Daemon(data / "runs_log").start()
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(data, ignore_errors=True)


def create_run(client: httpx.Client, **body: object) -> dict[str, Any]:
    """POST /api/runs and return the status body."""
    response = client.post("/api/runs", json=body)
    response.raise_for_status()
    status: dict[str, Any] = response.json()
    return status


def wait_terminal(client: httpx.Client, run_id: str, timeout: float = 600) -> dict[str, Any]:
    """Poll until the run is terminal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        time.sleep(0.05)
    raise TimeoutError(run_id)


class FrameCounter:
    """Counts SSE events in a byte stream, however the chunks split the frames."""

    PATTERN = b"\nevent: "
    END = b"\nevent: end\n"

    def __init__(self) -> None:
        self.events = 0
        self.ended = False
        # Shorter than PATTERN, so no match lies wholly inside it and none is counted twice.
        self._carry = b"\n"
        self._end_carry = b""

    def feed(self, chunk: bytes) -> None:
        """Count the events whose `event:` field is in chunk."""
        data = self._carry + chunk
        self.events += data.count(self.PATTERN)
        self._carry = data[-(len(self.PATTERN) - 1) :]
        tail = self._end_carry + chunk
        self.ended = self.ended or self.END in tail
        self._end_carry = tail[-len(self.END) :]


def first_event_ms(client: httpx.Client, path: str) -> float:
    """ms from sending GET path to receiving its first SSE event."""
    started = time.perf_counter()
    with client.stream("GET", path) as response:
        counter = FrameCounter()
        for chunk in response.iter_raw():
            counter.feed(chunk)
            if counter.events:
                break
    return (time.perf_counter() - started) * 1000


def machine() -> str:
    """Cores and memory of this machine, for the README table."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return f"{os.cpu_count()} cores, {mem_kb / 1024 / 1024:.0f} GiB"


def dumps(value: object) -> str:
    """Compact JSON."""
    return json.dumps(value, separators=(",", ":"))
