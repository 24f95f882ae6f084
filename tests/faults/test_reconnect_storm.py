"""Two hundred clients reconnecting with random cursors while a run streams."""

from __future__ import annotations

import json
import random

import anyio
import httpx
import pytest

from ..conftest import LOOPBACK_TLS, Daemon, parse_frames, read_log, wait_terminal

CLIENTS = 200
EVENTS = 1500


async def follow(
    url: str, run_id: str, rng: random.Random, limits: anyio.CapacityLimiter
) -> list[dict]:
    """Read the run in several sittings, each cut at a random point, resuming with the cursor
    of the last frame received (as EventSource does with Last-Event-ID)."""
    got: list[dict] = []
    cursor = rng.randint(0, EVENTS // 2)
    start = cursor
    async with httpx.AsyncClient(
        base_url=url, timeout=60, trust_env=False, verify=LOOPBACK_TLS
    ) as http:
        while True:
            budget = rng.randint(1, 400)  # bytes' worth of patience before hanging up
            ended = False
            async with limits:
                headers = {"Last-Event-ID": str(cursor)} if cursor else {}
                async with http.stream(
                    "GET", f"/api/runs/{run_id}/events", headers=headers
                ) as response:
                    assert response.status_code == 200
                    text = ""
                    async for chunk in response.aiter_text():
                        text += chunk
                        if len(text) > budget * 40 and "\n\n" in text:
                            break
                frames = parse_frames(text.rpartition("\n\n")[0] + "\n\n")
            for frame in frames:
                event = json.loads(frame["data"])
                got.append(event)
                cursor = event["id"]
                ended = event["event"] == "end"
            if ended:
                return [{"start": start}, *got]


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_reconnect_storm_ends_with_exactly_the_log_for_everyone(
    shared: Daemon,
) -> None:
    """Each of 200 clients, however often it reconnects, ends with the log after its cursor."""
    run = shared.create({"prompt": "storm", "demo": {"events": EVENTS, "durationSeconds": 4.0}})
    results: list[list[dict]] = []
    # Connections at once; the rest queue, as browsers' per-host limits make them.
    limits = anyio.CapacityLimiter(60)

    async def one(seed: int) -> None:
        results.append(await follow(shared.url, run["id"], random.Random(seed), limits))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for seed in range(CLIENTS):
                tg.start_soon(one, seed)
    status = wait_terminal(shared, run["id"])
    log = read_log(status["eventsLogPath"])
    assert len(results) == CLIENTS
    for result in results:
        start = result[0]["start"]
        assert result[1:] == log[start:]
