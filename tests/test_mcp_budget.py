"""MCP results sized for a model (issue 14), through the real MCP SDK client.

Three runs a model cannot swallow whole: one printing a 3 MB line, one printing 50,000 short
lines, one whose final answer is 100 KB. Every tool result and resource read stays within the
budget (measured as the serialised JSON-RPC result), the final answer and the cut markers are
there, paging through get_run_events in parts gives the 3 MB line back byte for byte, and the
JSONL log and SSE still carry everything. One more test has the real pinned Codex CLI as the
client, and checks both what od-runs sent it and what Codex showed the model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from od_runs.agents.codex import BINARY_ENV as CODEX_BIN
from od_runs.mcp_budget import DEFAULT_RESULT_BYTES
from od_runs.mcp_cut import dumps_compact, json_size

from .conftest import Daemon, connect, parse_frames, read_log, wait_terminal, write_script
from .fakes.responses_server import FunctionCall, Hold, Message, ResponsesServer
from .test_mcp_resources import CODEX_NAMESPACE, CODEX_TIMEOUT, codex_exec

pytestmark = pytest.mark.anyio

BUDGET = DEFAULT_RESULT_BYTES
# What JSON-RPC wraps around a result: {"jsonrpc":"2.0","id":N,"result":...}.
ENVELOPE = 64
TEST_DEADLINE = 120.0

# 200,000 numbered chunks of 15 UTF-8 bytes each (two characters are multi-byte, so a cut in
# the wrong place would show): one 3 MB line.
BIG_LINE_CODE = "''.join('%07d é€ ' % i for i in range(200_000))"
BIG_LINE = eval(BIG_LINE_CODE)
ANSWER = " ".join(f"word{i}" for i in range(15_000))  # about 100 KB

FAKE_CODEX = """\
import json, sys
sys.stdin.read()
answer = " ".join(f"word{i}" for i in range(15_000))
for event in (
    {"type": "thread.started", "thread_id": "0199aaaa-0000-7000-8000-000000000001"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": answer}},
    {"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 20000}},
):
    print(json.dumps(event), flush=True)
"""


def wire_size(result: CallToolResult | Any) -> int:
    """Bytes of the JSON-RPC response that carried result."""
    body = result.model_dump_json(by_alias=True, exclude_none=True)
    return len(body.encode()) + ENVELOPE


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def budgeted(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Call a tool that must succeed within the budget; its structured result."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, text_of(result)
    assert wire_size(result) <= BUDGET, (tool, args, wire_size(result))
    assert result.structured_content is not None
    return result.structured_content


async def follow(client: Client, run_id: str) -> dict[str, Any]:
    """wait_run until done, each result within the budget; the last result."""
    cursor = 0
    while True:
        waited = await budgeted(
            client, "wait_run", {"runId": run_id, "after": cursor, "timeoutSeconds": 20}
        )
        cursor = waited["nextCursor"]
        if waited["done"]:
            return waited


async def read_event_whole(client: Client, run_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """An event that came cut, read to its end part by part; the event as the log has it."""
    cut = event["cut"]
    field = cut["field"].removeprefix("data.")
    pieces = [(cut["offset"], event["data"][field] if field != "data" else event["data"])]
    while cut["nextOffset"] is not None:
        assert cut["omittedBytes"] > 0 and cut["nextOffset"] > cut["offset"]
        page = await budgeted(
            client,
            "get_run_events",
            {"runId": run_id, "after": event["id"] - 1, "limit": 1, "offset": cut["nextOffset"]},
        )
        (part,) = page["items"]
        assert part["id"] == event["id"]
        cut = part["cut"]
        pieces.append((cut["offset"], part["data"][field] if field != "data" else part["data"]))
    offsets = [offset for offset, _ in pieces]
    assert offsets == sorted(set(offsets))
    whole = "".join(piece for _, piece in pieces)
    if field == "data":
        return {**event, "data": json.loads(whole)}
    return {**event, "data": {**event["data"], field: whole}}


async def page_all(client: Client, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run through get_run_events, cut ones read in parts."""
    cursor, events = 0, []
    while True:
        page = await budgeted(
            client, "get_run_events", {"runId": run_id, "after": cursor, "limit": 500}
        )
        for item in page["items"]:
            whole = await read_event_whole(client, run_id, item) if "cut" in item else item
            whole.pop("cut", None)
            events.append(whole)
        assert page["items"], page
        cursor = page["nextCursor"]
        if not page["hasMore"]:
            return events


def sse_events(daemon: Daemon, run_id: str) -> list[dict[str, Any]]:
    """The run's events as its SSE stream replays them."""
    with daemon.client() as http:
        text = http.get(f"/api/runs/{run_id}/events").text
    return [json.loads(f["data"]) for f in parse_frames(text)]


def start_command(daemon: Daemon, code: str) -> dict[str, Any]:
    return daemon.create({"agentId": "command", "command": [sys.executable, "-c", code]})


@pytest.fixture(scope="module")
def codex_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose codex is a script printing `codex exec --json` with a 100 KB answer."""
    root = tmp_path_factory.mktemp("budget")
    script = write_script(root, "fake-codex", f"#!{sys.executable}\n{FAKE_CODEX}")
    script.chmod(0o755)
    data_dir = root / "runs_log"
    data_dir.mkdir()
    daemon = Daemon(data_dir)
    daemon.env[CODEX_BIN] = str(script)
    daemon.env["OPENAI_API_KEY"] = "sk-test-dummy"
    daemon.env["CODEX_HOME"] = str(root / "codex-home")
    os.makedirs(root / "codex-home", exist_ok=True)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.slow
async def test_a_3_mb_line_comes_cut_and_pages_back_byte_for_byte(shared: Daemon) -> None:
    """A run printing one 3 MB line: wait_run, get_run and runs://{id}/events stay within the
    budget and say what they cut and how to read it; paging through get_run_events in parts
    gives the line back byte for byte; the log and SSE still hold it whole."""
    run = start_command(shared, f"import sys; sys.stdout.write({BIG_LINE_CODE} + '\\n')")
    run_id = run["id"]
    wait_terminal(shared, run_id)
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http") as client:
            waited = await follow(client, run_id)
            got = await client.call_tool("get_run", {"runId": run_id})
            events = await client.read_resource(f"runs://{run_id}/events", cache_mode="bypass")
            paged = await page_all(client, run_id)

    assert waited["run"]["status"] == "succeeded"
    assert waited["summary"].startswith(f"Run {run_id} succeeded.")
    assert waited["events"][-1]["event"] == "end"
    cuts = [e["cut"] for e in waited["events"] if "cut" in e]
    assert cuts and all(c["omittedBytes"] > 0 for c in cuts)
    assert all("get_run_events" in c["rest"] and run["eventsLogPath"] in c["rest"] for c in cuts)
    assert waited["skipped"] > 0

    assert wire_size(got) <= 4_000, "get_run stays small whatever the run printed"
    assert wire_size(events) <= BUDGET
    lines = events.contents[0].text.splitlines()  # type: ignore[union-attr]
    assert json.loads(lines[-1])["event"] == "end"
    assert any("cut" in json.loads(line) for line in lines)

    log = read_log(run["eventsLogPath"])
    assert paged == log
    stdout = [e for e in paged if e["event"] == "stdout"]
    assert len(stdout) > 40, "the log keeps the line as 64 KB continuation events"
    assert "".join(e["data"]["text"] for e in stdout).encode() == BIG_LINE.encode()
    assert sse_events(shared, run_id) == log


async def test_50000_short_lines_keep_the_newest_and_count_the_rest(shared: Daemon) -> None:
    """A run printing 50,000 short lines: wait_run returns the newest lines that fit (the end
    among them) and counts the rest; get_run_events pages whole events within the budget."""
    run = start_command(shared, "for i in range(50_000): print(f'line {i} of many')")
    run_id = run["id"]
    wait_terminal(shared, run_id)
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http") as client:
            waited = await budgeted(client, "wait_run", {"runId": run_id, "limit": 200})
            page = await budgeted(
                client, "get_run_events", {"runId": run_id, "after": 0, "limit": 500}
            )
            small = await budgeted(
                client, "get_run_events", {"runId": run_id, "limit": 500, "maxBytes": 8_000}
            )
            got = await client.call_tool("get_run", {"runId": run_id})
            tail = await client.read_resource(f"runs://{run_id}/events", cache_mode="bypass")

    last = waited["run"]["lastEventId"]
    ids = [e["id"] for e in waited["events"]]
    assert ids == list(range(last - len(ids) + 1, last + 1)), "the newest, contiguous"
    assert waited["events"][-1]["event"] == "end"
    assert waited["skipped"] == last - len(ids)
    assert waited["nextCursor"] == last
    assert not any("cut" in e for e in waited["events"])

    assert [e["id"] for e in page["items"]] == list(range(1, len(page["items"]) + 1))
    assert page["hasMore"] and page["nextCursor"] == page["items"][-1]["id"]
    assert {"text": "line 0 of many"} in [e["data"] for e in page["items"][:3]]
    assert len(small["items"]) < len(page["items"])
    assert wire_size(got) <= 4_000
    assert wire_size(tail) <= BUDGET


async def test_a_100_kb_final_answer_leads_the_result_cut(codex_daemon: Daemon) -> None:
    """A run whose final answer is 100 KB: wait_run and get_run lead with a sentence quoting
    it; wait_run carries it cut with a marker, and reading that event in parts gives it all."""
    run = codex_daemon.create({"agentId": "codex", "prompt": "write a lot"})
    run_id = run["id"]
    final = wait_terminal(codex_daemon, run_id)
    assert final["status"] == "succeeded", (final["errorCode"], final["error"])
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(codex_daemon, "http") as client:
            waited = await budgeted(client, "wait_run", {"runId": run_id})
            got_result = await client.call_tool("get_run", {"runId": run_id})
            (answer,) = [e for e in waited["events"] if e["data"].get("final")]
            whole = await read_event_whole(client, run_id, answer)

    assert waited["summary"].startswith(f"Run {run_id} succeeded. Final answer: word0 word1")
    assert waited["events"][-1]["event"] == "end"
    assert answer["cut"]["totalBytes"] == len(ANSWER.encode())
    assert answer["data"]["text"] == ANSWER[: len(answer["data"]["text"])]
    assert whole["data"]["text"] == ANSWER
    assert text_of_first_line(got_result).startswith(f"Run {run_id} succeeded. Final answer:")
    assert wire_size(got_result) <= 4_000


def text_of_first_line(result: CallToolResult) -> str:
    return text_of(result).splitlines()[0]


def test_budget_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OD_RUNS_MCP_RESULT_BYTES sets the budget; below 4,096 it is raised to 4,096."""
    from od_runs.mcp_budget import result_budget

    monkeypatch.setenv("OD_RUNS_MCP_RESULT_BYTES", "12000")
    assert result_budget() == 12_000
    monkeypatch.setenv("OD_RUNS_MCP_RESULT_BYTES", "10")
    assert result_budget() == 4_096
    monkeypatch.delenv("OD_RUNS_MCP_RESULT_BYTES")
    assert result_budget() == BUDGET


# How Codex tells the model it left the middle of a tool output out.
CODEX_ELISION = re.compile(r"…\d+ tokens truncated…")


def codex_tool_results(jsonl: str) -> list[dict[str, Any]]:
    """The MCP results as `codex exec --json` reports them: od-runs's own, before Codex
    formats them for the model."""
    results = []
    for line in jsonl.splitlines():
        event = json.loads(line)
        item = event.get("item") or {}
        if event["type"] == "item.completed" and item.get("type") == "mcp_tool_call":
            assert item["status"] == "completed", item
            results.append(item["result"])
    return results


@pytest.mark.slow
@pytest.mark.needs_cli("codex")
def test_codex_hands_the_model_budgeted_parts_of_a_3_mb_line(
    shared: Daemon, tmp_path: Path
) -> None:
    """Issue 14 through the real Codex CLI as MCP client of `od-runs mcp`: the scripted
    model's wait_run on a run that printed a 3 MB line, then get_run_events from the offset
    the cut marker it was shown names. Each result od-runs sent is within the budget with
    its cut marker (and wait_run the final status), and the two parts join to the line's
    bytes exactly.

    Codex does not pass a result on whole: the model gets "Wall time: ...\nOutput:\n" and
    the compact JSON of structuredContent (the text block is dropped), of which Codex keeps
    about 6 KB of head and 6 KB of tail around a "…N tokens truncated…" marker. The cut
    marker and the status sit in what it keeps, so the model can page on; the whole result
    is checked in what `codex exec --json` reports of each MCP call."""
    run = start_command(shared, f"import sys; sys.stdout.write({BIG_LINE_CODE} + '\\n')")
    run_id = run["id"]
    assert wait_terminal(shared, run_id)["status"] == "succeeded"
    workdir = tmp_path / "work"
    workdir.mkdir()
    stdout_path = tmp_path / "codex.jsonl"
    with ResponsesServer() as server, stdout_path.open("w") as stdout:
        hold = Hold()
        wait = FunctionCall("wait_run", {"runId": run_id}, namespace=CODEX_NAMESPACE)
        server.script([wait], hold, [Message("I have read the line in two parts.")])
        argv, env = codex_exec(tmp_path, server, shared, "Read the run's output.")
        # stdout to a file: each MCP call's event line is ~60 KB, more than a pipe holds.
        with subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        ) as codex:
            try:
                assert hold.reached.wait(CODEX_TIMEOUT), "Codex never sent wait_run's output"
                # The next call is read off the marker, as the model would.
                (seen,) = server.function_outputs()
                rest = re.search(
                    rf"get_run_events runId={run_id} after=(\d+) limit=1 offset=(\d+)", seen
                )
                assert rest, seen
                after, offset = int(rest.group(1)), int(rest.group(2))
                args = {"runId": run_id, "after": after, "limit": 1, "offset": offset}
                hold.after.append(FunctionCall("get_run_events", args, namespace=CODEX_NAMESPACE))
                hold.released.set()
                _, err = codex.communicate(timeout=CODEX_TIMEOUT)
            except BaseException:
                hold.released.set()
                codex.kill()
                raise
    assert codex.returncode == 0, err
    assert len(server.requests) == 3

    results = codex_tool_results(stdout_path.read_text())
    assert len(results) == 2
    for result in results:
        wire = {"content": result["content"], "structuredContent": result["structured_content"]}
        assert json_size(wire) + ENVELOPE <= BUDGET
    waited, page = (r["structured_content"] for r in results)
    assert waited["run"]["status"] == "succeeded" and waited["done"]
    assert waited["events"][-1]["data"]["status"] == "succeeded"
    (first,) = [e for e in waited["events"] if "cut" in e]
    (second,) = page["items"]
    assert first["id"] == second["id"] == after + 1
    assert first["cut"]["offset"] == 0 and first["cut"]["nextOffset"] == offset
    assert second["cut"]["offset"] == offset == len(first["data"]["text"].encode())
    assert second["cut"]["totalBytes"] == first["cut"]["totalBytes"]
    assert second["cut"]["omittedBytes"] > 0, "the second part is cut too"

    # The parts join to the event's text exactly; that text is the line from where the
    # log's earlier stdout events leave off.
    joined = (first["data"]["text"] + second["data"]["text"]).encode()
    log = read_log(run["eventsLogPath"])
    before = "".join(
        e["data"]["text"] for e in log if e["event"] == "stdout" and e["id"] < after + 1
    )
    start = len(before.encode())
    assert start > 0
    assert joined == BIG_LINE.encode()[start : start + len(joined)]
    assert len(joined) == first["cut"]["partBytes"] + second["cut"]["partBytes"]

    # What the model was shown: within the budget, od-runs's JSON with its middle elided,
    # the marker and the status in what is left.
    # The last request holds the whole conversation: both outputs, as the model saw them.
    shown_all = [
        item["output"]
        for item in server.requests[-1]["input"]
        if item.get("type") == "function_call_output"
    ]
    assert shown_all[0] == seen
    for shown, result in zip(shown_all, results, strict=True):
        assert len(shown.encode()) <= BUDGET
        body = shown.split("Output:\n", 1)[1]
        head, tail = CODEX_ELISION.split(body)
        produced = dumps_compact(result["structured_content"])
        assert produced.startswith(head) and produced.endswith(tail)
        assert '"cut":{"field":"data.text"' in tail
    assert f"Run {run_id} succeeded." in seen
    assert '"data":{"status":"succeeded"' in seen
