"""An outer agent's MCP client on one daemon follows a run another daemon executes (issue 11):
wait_run wakes on its events and its end, get_run_events pages it, the events resource reads
it, all equal to the executor's events.jsonl (invariants 3 and 5 across daemons)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mcp.types import TextResourceContents

from .cluster import Cluster, make_gate, release
from .conftest import assert_dense, call, connect, read_log

pytestmark = pytest.mark.anyio

# Prints 20 lines, blocks on the FIFO argv[1], prints 20 more.
CHILD = """
import sys
for i in range(20):
    print(f"early {i}", flush=True)
with open(sys.argv[1]) as f:
    f.read()
for i in range(20):
    print(f"late {i}", flush=True)
"""


async def test_mcp_on_a_daemon_that_does_not_execute_the_run(tmp_path: Path, pg_url: str) -> None:
    """wait_run, get_run_events and the run's events resource on w2 for a run w1 executes."""
    gate = make_gate(tmp_path / "gate")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with Cluster(tmp_path / "cluster", pg_url, size=2) as cluster:
        body = {"agentId": "command", "command": [sys.executable, str(script), str(gate)]}
        run = cluster.create("w1", body)
        assert cluster.executor(run["id"], "w1") == "w1"
        async with connect(cluster["w2"], "http") as client:

            async def wait(cursor: int) -> dict:
                args = {"runId": run["id"], "after": cursor, "timeoutSeconds": 20}
                # returnOnEvent: back at each batch; limit: every event, none skipped.
                result = await call(
                    client, "wait_run", {**args, "returnOnEvent": True, "limit": 100}
                )
                assert result.get("skipped", 0) == 0
                return result

            cursor, seen = 0, []
            while len([e for e in seen if e["event"] == "stdout"]) < 20:
                result = await wait(cursor)
                assert not result["done"]
                seen, cursor = seen + result["events"], result["nextCursor"]
            release(gate)
            while not result["done"]:
                result = await wait(cursor)
                seen, cursor = seen + result["events"], result["nextCursor"]
            assert result["run"]["status"] == "succeeded"
            assert result["run"]["workerId"] == "w1"
            page = await call(
                client, "get_run_events", {"runId": run["id"], "after": 0, "limit": 100}
            )
            resource = await client.read_resource(f"runs://{run['id']}/events", cache_mode="bypass")
    log = read_log(result["run"]["eventsLogPath"])
    assert_dense(log)
    assert seen == log
    assert page["items"] == log and not page["hasMore"]
    (content,) = resource.contents
    assert isinstance(content, TextResourceContents)
    assert [json.loads(line) for line in content.text.splitlines()] == log
