"""The run options `model`, `idleTimeoutMs` and `timeoutMs` through MCP `start_run` and
`od-runs start`, and the agent list both read from the adapter registry."""

from __future__ import annotations

import json
import re
import sys

import anyio
import pytest

from od_runs.agents import agent_ids

from .conftest import Daemon, call, connect, error_text, wait_terminal
from .test_cli import od

TEST_DEADLINE = 30.0
# A child that never prints: the idle watchdog must stop it.
SILENT = [sys.executable, "-c", "import signal; signal.pause()"]
# A child that prints steadily forever: only the wall-clock limit stops it.
CHATTY = [
    sys.executable,
    "-uc",
    "import time\nwhile True:\n    print('tick')\n    time.sleep(0.05)",
]


@pytest.mark.anyio
async def test_start_run_offers_every_registered_agent_and_the_run_options(
    shared: Daemon,
) -> None:
    """The tool's schema lists the registry's agents (claude included) and the new options."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http") as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    properties = tools["start_run"].input_schema["properties"]
    assert {"model", "idleTimeoutMs", "timeoutMs"} <= set(properties)
    agent = properties["agentId"]
    assert agent["enum"] == agent_ids() and "claude" in agent["enum"]
    assert all(f"{name}:" in agent["description"] for name in agent_ids())


@pytest.mark.anyio
async def test_start_run_passes_idle_and_wall_clock_limits_to_the_run(shared: Daemon) -> None:
    """idleTimeoutMs stops a silent child (AGENT_STALLED), timeoutMs a chatty one
    (AGENT_TIMEOUT)."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http") as client:
            stalled = await call(
                client,
                "start_run",
                {"agentId": "command", "command": SILENT, "idleTimeoutMs": 300},
            )
            timed = await call(
                client,
                "start_run",
                {"agentId": "command", "command": CHATTY, "timeoutMs": 500, "idleTimeoutMs": 0},
            )
    bodies = [
        await anyio.to_thread.run_sync(wait_terminal, shared, run["run"]["id"])
        for run in (stalled, timed)
    ]
    assert [(b["status"], b["errorCode"]) for b in bodies] == [
        ("failed", "AGENT_STALLED"),
        ("failed", "AGENT_TIMEOUT"),
    ]


@pytest.mark.anyio
async def test_start_run_hands_the_model_to_the_agent(shared: Daemon) -> None:
    """`model` reaches the run request: an agent without models refuses it by name, and a
    malformed one is a clear INVALID_REQUEST."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http") as client:
            refused = await client.call_tool("start_run", {"agentId": "demo", "model": "gpt-x"})
            flag = await client.call_tool("start_run", {"agentId": "codex", "model": "-rf"})
    assert refused.is_error
    assert "does not take a 'model'" in error_text(refused)
    # A model that would read as a flag on the agent's command line is refused up front.
    assert flag.is_error
    assert "INVALID_REQUEST: model:" in error_text(flag)


def test_cli_start_takes_the_idle_and_wall_clock_limits_in_seconds(shared: Daemon) -> None:
    """`--idle-timeout 0.3` and `--timeout 0.5` become idleTimeoutMs and timeoutMs."""
    stalled = od(
        shared.url, "start", "--json", "--agent", "command", "--idle-timeout", "0.3", "--", *SILENT
    )
    timed = od(
        shared.url,
        "start",
        "--json",
        "--agent",
        "command",
        "--timeout",
        "0.5",
        "--idle-timeout",
        "0",
        "--",
        *CHATTY,
    )
    assert stalled.returncode == 0 and timed.returncode == 0, stalled.stderr + timed.stderr
    bodies = [wait_terminal(shared, json.loads(done.stdout)["id"]) for done in (stalled, timed)]
    assert [(b["status"], b["errorCode"]) for b in bodies] == [
        ("failed", "AGENT_STALLED"),
        ("failed", "AGENT_TIMEOUT"),
    ]


def test_cli_start_hands_the_model_over_and_lists_every_agent(shared: Daemon) -> None:
    """`--model` reaches the run request; `--agent` offers the registry's agents."""
    refused = od(shared.url, "start", "--model", "gpt-x", "hello")
    assert refused.returncode != 0
    assert "does not take a 'model'" in refused.stderr
    assert "Traceback" not in refused.stderr
    flag = od(shared.url, "start", "--agent", "codex", "--model=-rf", "hello")
    assert flag.returncode == 2 and "model" in flag.stderr and "Traceback" not in flag.stderr
    help_text = od(None, "start", "--help").stdout
    choices = re.search(r"--agent \[([^\]]+)\]", help_text)
    assert choices is not None and choices.group(1).split("|") == agent_ids()
    assert "claude" in agent_ids()
