"""Memory is bounded (invariant 7): a run keeps a small tail in memory and reads the rest
from its log; a finished run leaves memory after its TTL and stays readable everywhere."""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
import uvicorn
from mcp import Client

from od_runs import http_app, runs
from od_runs.config import Settings
from od_runs.runs import RunService

from .conftest import (
    DAEMON_START_TIMEOUT,
    LOOPBACK_TLS,
    RUN_DEADLINE,
    Daemon,
    apoll,
    assert_dense,
    call,
    free_port,
    parse_frames,
    read_log,
    wait_terminal,
)

BIG_RUN_EVENTS = 1_000_000
# A run of this size first, written and replayed, so the allocator, the SSE path and the
# store reach their working size before the baseline is taken: what the big run adds after
# it is growth. With 50,000 the baseline was sometimes 15 MB short of that size.
WARM_UP_EVENTS = 200_000
# The big run's log is about 100 MB (some 100 bytes a line). Keeping each event in memory,
# even as its bare line, would add that much; 40 MB is under 40 bytes an event, less than any
# line, so only memory that does not scale with the event count fits under it. Measured
# growth is 0-3 MB; the rest is room for allocator noise on a loaded machine.
RSS_GROWTH_LIMIT = 40 * 2**20
MIN_BIG_LOG_BYTES = 80 * 2**20
# How often the daemon's RSS is sampled while the big run is written and replayed.
SAMPLE_EVERY = 0.01

# Short, so the test sees a finished run leave memory; long enough to see it held first.
FINISHED_TTL = 1.0
# How early (by our clock) an eviction may be seen: our clock starts when `wait` returns,
# which is a scheduling step after the run's own finish time that the TTL counts from.
TTL_SLACK = 0.2
EVICTION_DEADLINE = 15.0
# More events than the in-memory tail holds, so reading the run means reading its log.
SMALL_RUN_EVENTS = 600
PAGE_LIMIT = 250


class RssSampler:
    """The peak resident set size of a process, sampled on a thread while in use."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        """Sample from entry to exit."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
        self.peak = max(self.peak, self.process.memory_info().rss)


def replay_ids(daemon: Daemon, run_id: str) -> tuple[int, str]:
    """Read a run's whole SSE stream from the start: ids 1, 2, 3 ... each once, in order.

    Returns the number of events and the name of the last one. Frames are checked as they
    stream in, so a million of them never sit in this process at once.
    """
    expected = 1
    last_event = ""
    rest = b""
    with (
        daemon.client(timeout=60) as http,
        http.stream("GET", f"/api/runs/{run_id}/events") as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            blocks = (rest + chunk).split(b"\n\n")
            rest = blocks.pop()
            for block in blocks:
                if not block.startswith(b"id: "):
                    continue  # retry: and keep-alive comments
                head, name, _ = block.split(b"\n", 2)
                assert int(head[4:]) == expected, f"frame {head!r} where id {expected} was due"
                expected += 1
                last_event = name.removeprefix(b"event: ").decode()
    assert rest.strip() == b"", "the stream ended inside a frame"
    return expected - 1, last_event


def count_lines(path: Path) -> int:
    """The number of lines of a file, read in large blocks."""
    count = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count


@pytest.mark.slow
# A million events written and replayed: a minute is not enough when the machine is busy.
@pytest.mark.timeout(240)
def test_a_million_event_run_does_not_grow_the_daemon(daemon: Daemon) -> None:
    """Invariant 7: a 1,000,000-event run, written and then replayed whole over SSE, grows
    the daemon's RSS by less than 40 MB while its log is about 100 MB; the run is complete."""
    assert daemon.proc is not None
    process = psutil.Process(daemon.proc.pid)
    warm = daemon.create({"prompt": "warm up", "demo": {"events": WARM_UP_EVENTS, "fast": True}})
    assert wait_terminal(daemon, warm["id"])["status"] == "succeeded"
    assert replay_ids(daemon, warm["id"]) == (WARM_UP_EVENTS + 2, "end")
    baseline = process.memory_info().rss

    with RssSampler(process).running() as sampler:
        run = daemon.create({"prompt": "long", "demo": {"events": BIG_RUN_EVENTS, "fast": True}})
        status = wait_terminal(daemon, run["id"])
        after_run = process.memory_info().rss
        replayed = replay_ids(daemon, run["id"])
    at_end = process.memory_info().rss

    log_path = Path(run["eventsLogPath"])
    lines = count_lines(log_path)
    assert status["status"] == "succeeded", status
    # start, one agent event per demo event, end: every one logged and counted.
    assert lines == BIG_RUN_EVENTS + 2
    assert status["lastEventId"] == lines
    assert replayed == (lines, "end")
    log_bytes = log_path.stat().st_size
    assert log_bytes > MIN_BIG_LOG_BYTES, "the log is too small for the bound to mean anything"

    mib = 2**20
    report = (
        f"baseline {baseline / mib:.0f} MiB, after the run {after_run / mib:.0f} MiB, "
        f"peak {sampler.peak / mib:.0f} MiB, at the end {at_end / mib:.0f} MiB, "
        f"log {log_bytes / mib:.0f} MiB"
    )
    assert sampler.peak - baseline < RSS_GROWTH_LIMIT, report
    assert at_end - baseline < RSS_GROWTH_LIMIT, report


@asynccontextmanager
async def serving(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, RunService]]:
    """The daemon's app on a loopback port in this process, with a short finished-run TTL.

    In this process so the test can ask the service which runs it holds, which no route
    tells; `serve` has no TTL option, so the app's service factory gets the TTL bound in.
    """
    monkeypatch.setattr(
        http_app, "open_service", functools.partial(runs.open_service, finished_ttl=FINISHED_TTL)
    )
    port = free_port()
    app = http_app.create_app(Settings(port=port, data_dir=data_dir))
    server = http_app.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await apoll("the app to serve", lambda: server.started, DAEMON_START_TIMEOUT)
        try:
            yield f"http://127.0.0.1:{port}", app.state.service
        finally:
            server.should_exit = True


async def json_pages(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run through the paged JSON route."""
    items: list[dict[str, Any]] = []
    cursor = 0
    while True:
        response = await http.get(
            f"/api/runs/{run_id}/events",
            params={"format": "json", "after": cursor, "limit": PAGE_LIMIT},
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["nextCursor"]
        if not page["hasMore"]:
            return items


async def sse_frames(
    http: httpx.AsyncClient, run_id: str, headers: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """The frames of a run's SSE stream, read until the daemon closes it."""
    async with http.stream("GET", f"/api/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        return parse_frames((await response.aread()).decode())


async def mcp_pages(client: Client, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run through the get_run_events tool."""
    items: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = await call(
            client, "get_run_events", {"runId": run_id, "after": cursor, "limit": PAGE_LIMIT}
        )
        items += page["items"]
        cursor = page["nextCursor"]
        if not page["hasMore"]:
            return items


@pytest.mark.anyio
async def test_a_finished_run_leaves_memory_after_its_ttl_and_stays_readable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 7: a finished run is held for its TTL, then leaves memory; afterwards REST,
    SSE and MCP still serve its status and every event, from SQLite and the log."""
    async with (
        serving(data_dir, monkeypatch) as (url, service),
        httpx.AsyncClient(base_url=url, trust_env=False, verify=LOOPBACK_TLS, timeout=30) as http,
    ):
        created = await http.post(
            "/api/runs",
            json={"prompt": "short", "demo": {"events": SMALL_RUN_EVENTS, "fast": True}},
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        with anyio.fail_after(RUN_DEADLINE):
            await service.wait(run_id)
        done_at = anyio.current_time()
        assert service.find(run_id) is not None, "the run left memory before its TTL"
        before = (await http.get(f"/api/runs/{run_id}")).json()
        assert before["status"] == "succeeded"

        await apoll(
            "the run to leave memory", lambda: service.find(run_id) is None, EVICTION_DEADLINE
        )
        assert anyio.current_time() - done_at >= FINISHED_TTL - TTL_SLACK

        log = read_log(before["eventsLogPath"])
        assert_dense(log)
        assert len(log) == SMALL_RUN_EVENTS + 2
        assert before["lastEventId"] == len(log)

        # REST: the same status body, and every event in pages.
        assert (await http.get(f"/api/runs/{run_id}")).json() == before
        assert await json_pages(http, run_id) == log

        # SSE: a full replay, every id once and in order, ending with `end`, then closed;
        # and a cursor at the end still gets the `end` (invariant 6).
        frames = await sse_frames(http, run_id)
        assert [int(f["id"]) for f in frames] == list(range(1, len(log) + 1))
        assert frames[-1]["event"] == "end"
        assert [f["data"] for f in frames] == (
            Path(before["eventsLogPath"]).read_text().splitlines()
        )
        at_end = await sse_frames(http, run_id, {"Last-Event-ID": str(len(log))})
        assert [(f["id"], f["event"]) for f in at_end] == [(str(len(log)), "end")]

        # MCP through the SDK client on /mcp.
        async with Client(f"{url}/mcp") as client:
            got = await call(client, "get_run", {"runId": run_id})
            assert got["run"] == before
            assert await mcp_pages(client, run_id) == log

        # Served from SQLite and the log: reading the run did not bring it back.
        assert service.find(run_id) is None
