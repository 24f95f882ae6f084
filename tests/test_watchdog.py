"""The idle watchdog and the wall-clock limit, for every agent (seed 000 ported).

A real RunService runs real `command` children: silence fails AGENT_STALLED, slow but
steady output (stdout or stderr, as tool progress is) never does, and only a run that asked
for `timeoutMs` can fail AGENT_TIMEOUT.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest

from od_runs.agents.codex import IDLE_TIMEOUT_MS
from od_runs.agents.watchdog import Watchdog
from od_runs.models import RunCreate, RunStatus
from od_runs.runs import RunService, open_service

from .conftest import RUN_DEADLINE, process_alive

pytestmark = pytest.mark.anyio

# Prints a line every INTERVAL seconds for TOTAL seconds, alternating stdout and stderr.
STEADY = """
import sys, time
interval, total = float(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
n = 0
while time.monotonic() - start < total:
    stream = sys.stdout if n % 2 == 0 else sys.stderr
    print(f"progress {n}", file=stream, flush=True)
    n += 1
    time.sleep(interval)
"""
SILENT = [sys.executable, "-c", "import signal; print('hello', flush=True); signal.pause()"]


def steady(interval: float, total: float) -> list[str]:
    return [sys.executable, "-c", STEADY, str(interval), str(total)]


async def finish(service: RunService, request: RunCreate) -> RunStatus:
    started = await service.start(request)
    with anyio.fail_after(RUN_DEADLINE):
        return await service.wait(started.id)


async def test_a_silent_child_is_stalled_after_idle_timeout_and_stopped() -> None:
    """No output for idleTimeoutMs: AGENT_STALLED (retryable), an error event, no process."""
    async with open_service(None, grace=2.0) as service:
        body = await finish(
            service, RunCreate(agentId="command", command=SILENT, idleTimeoutMs=300)
        )
        events, _ = await service.events(body.id)
    assert (body.status, body.errorCode, body.retryable) == ("failed", "AGENT_STALLED", True)
    assert body.error is not None and "idleTimeoutMs" in body.error
    assert body.signal == "SIGTERM"
    errors = [e.data["error"]["code"] for e in events if e.event == "error"]
    assert errors == ["AGENT_STALLED"]
    assert events[-1].event == "end" and events[-1].data["errorCode"] == "AGENT_STALLED"
    assert body.childPid is not None and not process_alive(body.childPid)


async def test_slow_but_steady_output_on_either_stream_keeps_a_run_alive() -> None:
    """Any output resets the idle clock: a run longer than idleTimeoutMs still succeeds."""
    async with open_service(None) as service:
        body = await finish(
            service,
            RunCreate(agentId="command", command=steady(0.05, 1.5), idleTimeoutMs=700),
        )
        events, _ = await service.events(body.id, 0, 1000)
    assert (body.status, body.errorCode) == ("succeeded", None)
    assert {e.event for e in events} >= {"stdout", "stderr"}


async def test_steady_output_does_not_save_a_run_from_its_time_limit() -> None:
    """timeoutMs is a wall clock: AGENT_TIMEOUT however busy the child is."""
    async with open_service(None, grace=2.0) as service:
        body = await finish(
            service,
            RunCreate(agentId="command", command=steady(0.05, 30), timeoutMs=500),
        )
    assert (body.status, body.errorCode, body.retryable) == ("failed", "AGENT_TIMEOUT", False)
    assert body.error is not None and "timeoutMs" in body.error


async def test_a_cancel_is_a_cancel_even_with_a_watchdog() -> None:
    async with open_service(None, grace=2.0) as service:
        started = await service.start(
            RunCreate(agentId="command", command=SILENT, idleTimeoutMs=60_000)
        )
        with anyio.fail_after(RUN_DEADLINE):
            while (await service.get(started.id)).lastEventId < 2:
                await service.wait_for_events(started.id, 1, 1.0)
            body = await service.cancel(started.id)
    assert (body.status, body.errorCode) == ("canceled", None)


async def test_limits_come_from_the_run_or_the_agent_default() -> None:
    """null takes the adapter's default, 0 turns the watchdog off; no timeout unless asked."""
    codex_default = Watchdog.for_run(RunCreate(agentId="codex"), IDLE_TIMEOUT_MS)
    assert (codex_default.idle, codex_default.timeout) == (IDLE_TIMEOUT_MS / 1000, None)
    off = Watchdog.for_run(RunCreate(agentId="codex", idleTimeoutMs=0), IDLE_TIMEOUT_MS)
    assert (off.idle, off.timeout) == (None, None)
    command = Watchdog.for_run(RunCreate(agentId="command", timeoutMs=1500), None)
    assert (command.idle, command.timeout) == (None, 1.5)


def test_a_negative_or_absurd_limit_is_refused() -> None:
    limits: tuple[dict[str, Any], ...] = (
        {"idleTimeoutMs": -1},
        {"timeoutMs": 0},
        {"timeoutMs": 10**12},
    )
    for fields in limits:
        with pytest.raises(ValueError):
            RunCreate(agentId="command", command=["true"], **fields)
