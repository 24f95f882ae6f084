"""Latency of the paths a user feels: start to first event, MCP get_run, wait_run wake-up.

Figures: p50 ms from `POST /api/runs` (demo agent) to its first event on SSE; p50 ms of MCP
`get_run` over Streamable HTTP; p50 ms from an event's `ts` to `wait_run` returning it.
Baseline for each: a `GET /api/health` round trip on the same connection kind.

get_run is timed twice. The figure is JSON-RPC posted over one kept-alive connection, as
a client in Rust or TypeScript (Codex, Claude Code) talks; it is what the daemon costs.
Next to it, the same call through the Python SDK's `Client`, which opens a new connection
per call (it stops reading each answer's stream once it has the result) and checks the
result against the tool's output schema: most of its time is spent in the client.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime

import anyio
import httpx
from mcp import Client

from common import Figure, create_run, daemon, first_event_ms, report, wait_terminal

TRIES = 200
PROTOCOL = "2025-11-25"


def start_to_first_event(client: httpx.Client) -> list[float]:
    """ms from POST to the first SSE event, per try."""
    times = []
    for _ in range(TRIES):
        started = time.perf_counter()
        run = create_run(client, agentId="demo", prompt="hi", demo={"events": 4, "fast": True})
        first_event_ms(client, f"/api/runs/{run['id']}/events")
        times.append((time.perf_counter() - started) * 1000)
        wait_terminal(client, run["id"])
    return times


def health(client: httpx.Client) -> list[float]:
    """ms of GET /api/health, per try."""
    times = []
    for _ in range(TRIES):
        started = time.perf_counter()
        client.get("/api/health").raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def mcp_figures(url: str, run_id: str, slow_run_id: str) -> tuple[list[float], list[float]]:
    """ms of get_run calls, and ms from an event's ts to wait_run handing it back."""
    get_times, wake_times = [], []
    async with Client(f"{url}/mcp", mode="legacy") as mcp:
        for _ in range(TRIES):
            started = time.perf_counter()
            result = await mcp.call_tool("get_run", {"runId": run_id})
            get_times.append((time.perf_counter() - started) * 1000)
            assert not result.is_error
        cursor = 0
        while True:
            called = time.time()
            result = await mcp.call_tool(
                "wait_run",
                {"runId": slow_run_id, "after": cursor, "returnOnEvent": True, "limit": 200},
            )
            woke = time.time()
            assert not result.is_error, result
            body = result.structured_content or {}
            events = body.get("events", [])
            if events:
                ts = datetime.fromisoformat(events[0]["ts"].replace("Z", "+00:00")).timestamp()
                if ts > called:  # the call was parked when the event came
                    wake_times.append((woke - ts) * 1000)
                cursor = body["nextCursor"]
            if body.get("done"):
                break
    return get_times, wake_times


def raw_get_run(url: str, run_id: str) -> list[float]:
    """ms of get_run as JSON-RPC POSTs on one kept-alive connection, answers read whole."""
    headers = {"Accept": "application/json, text/event-stream"}
    times = []
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        hello = {"protocolVersion": PROTOCOL, "capabilities": {}}
        hello["clientInfo"] = {"name": "bench", "version": "0"}
        init = http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}
        )
        init.raise_for_status()
        http.headers["mcp-session-id"] = init.headers["mcp-session-id"]
        http.headers["mcp-protocol-version"] = PROTOCOL
        http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i in range(1, TRIES + 1):
            call = {"name": "get_run", "arguments": {"runId": run_id}}
            started = time.perf_counter()
            answer = http.post(
                "/mcp", json={"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": call}
            )
            times.append((time.perf_counter() - started) * 1000)
            assert f'"id":"{run_id}"' in answer.text and '"isError":false' in answer.text, (
                answer.text
            )
    return times


def main() -> None:
    """Measure on one daemon; MCP runs over the real SDK client."""
    with daemon() as d, httpx.Client(base_url=d.url, timeout=60) as client:
        base = statistics.median(health(client))
        starts = start_to_first_event(client)
        done = create_run(client, agentId="demo", prompt="x", demo={"events": 10, "fast": True})
        wait_terminal(client, done["id"])
        # One event every 200 ms: each wait_run call is parked when its event arrives.
        slow = create_run(
            client, agentId="demo", prompt="x", demo={"events": 25, "durationSeconds": 5}
        )
        raw_times = raw_get_run(d.url, done["id"])
        sdk_times, wake_times = anyio.run(mcp_figures, d.url, done["id"], slow["id"])
    p50_start = statistics.median(starts)
    p50_get = statistics.median(raw_times)
    p50_sdk = statistics.median(sdk_times)
    p50_wake = statistics.median(wake_times)
    report(
        [
            Figure(
                "start: POST to first SSE event, p50",
                p50_start,
                "ms",
                "<= 100 ms",
                f"health round trip {base:.2f} ms",
                p50_start <= 100,
            ),
            Figure(
                "MCP get_run over Streamable HTTP, p50",
                p50_get,
                "ms",
                "<= 5 ms",
                f"health round trip {base:.2f} ms",
                p50_get <= 5,
                f"through the Python SDK Client: {p50_sdk:.2f} ms",
            ),
            Figure(
                "MCP wait_run wake-up after the event, p50",
                p50_wake,
                "ms",
                "<= 10 ms",
                "",
                p50_wake <= 10,
                "event ts has 1 ms resolution",
            ),
        ]
    )


if __name__ == "__main__":
    main()
