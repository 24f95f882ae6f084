"""The run lifecycle (seed 004 ported): a real RunService with real child processes.

Each test's docstring names the invariant of docs/DESIGN.md it enforces.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from od_runs.agents.command import CommandAdapter
from od_runs.agents.process import group_members
from od_runs.models import RunCreate, RunError
from od_runs.runs import RunService, open_service
from od_runs.sse import run_frames

from .conftest import apoll, assert_dense, read_log, write_script

pytestmark = pytest.mark.anyio

# Traps SIGTERM, notes it in a file, then dies of it ("exit") or carries on ("ignore").
SIGNAL_CHILD = """
import os, signal, sys, time
marker, mode = sys.argv[1], sys.argv[2]
def on_term(signum, frame):
    with open(marker, "a") as f:
        f.write(f"SIGTERM {time.monotonic()}\\n")
    if mode == "exit":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
signal.signal(signal.SIGTERM, on_term)
if len(sys.argv) > 3:  # a grandchild in the same process group, also deaf to SIGTERM
    import subprocess
    subprocess.Popen([sys.executable, "-c",
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.pause()"])
print("ready", flush=True)
while True:
    signal.pause()
"""


def signal_child(tmp_path: Path, mode: str, grandchild: bool = False) -> RunCreate:
    script = write_script(tmp_path, "child.py", SIGNAL_CHILD)
    argv = [sys.executable, str(script), str(tmp_path / "signals.txt"), mode]
    return RunCreate(agentId="command", command=argv + (["grandchild"] if grandchild else []))


async def wait_ready(service: RunService, run_id: str) -> None:
    """Wait until the child printed "ready" (its second event, after `start`)."""
    with anyio.fail_after(10):
        while (await service.get(run_id)).lastEventId < 2:
            await service.wait_for_events(run_id, (await service.get(run_id)).lastEventId, 5)


async def test_a_failed_run_keeps_its_structured_error_on_status_and_in_wait() -> None:
    """Invariant 1: a failed run's errorCode, error and retryable survive on its status."""
    async with open_service(None) as service:
        run = await service.create(RunCreate(projectId="p1", conversationId="c1"))
        waiter_result = {}

        async def waiter() -> None:
            waiter_result["status"] = await service.wait(run.id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            message = "Agent went quiet for 1s."
            # The error is the finish's own (an `error` event alone no longer sets it).
            error = RunError(code="AGENT_STALLED", message=message, retryable=True)
            service.emit(run, "error", {"message": message, "error": error.model_dump()})
            service.finish(run, "failed", 1, None, error)
        body = run.status_body()
        assert (body.status, body.errorCode, body.error, body.retryable) == (
            "failed",
            "AGENT_STALLED",
            message,
            True,
        )
        waited = waiter_result["status"]
        assert (waited.status, waited.errorCode, waited.error) == (
            "failed",
            "AGENT_STALLED",
            message,
        )


async def test_only_the_first_finish_counts_and_there_is_exactly_one_end() -> None:
    """Invariant 1: the first terminal transition wins; exactly one `end`, last."""
    async with open_service(None) as service:
        run = await service.create(RunCreate())
        assert service.finish(run, "succeeded", 0, None) is True
        assert service.finish(run, "failed", 1, "SIGTERM", RunError(code="X", message="y")) is False
        body = await service.wait(run.id)
        assert (body.status, body.exitCode, body.signal, body.errorCode) == (
            "succeeded",
            0,
            None,
            None,
        )
        items, _ = await service.events(run.id)
        assert [e.event for e in items] == ["end"]
        assert items[0].data == {"status": "succeeded", "code": 0, "signal": None}


async def test_list_filters_by_project_conversation_and_active_status() -> None:
    """`status=active` means not terminal; filters combine."""
    async with open_service(None) as service:
        a = await service.create(RunCreate(projectId="p1", conversationId="conv-a"))
        b = await service.create(RunCreate(projectId="p1", conversationId="conv-b"))
        done = await service.create(RunCreate(projectId="p1", conversationId="conv-b"))
        other = await service.create(RunCreate(projectId="p2", conversationId="conv-b"))
        service.finish(done, "succeeded", 0)
        found = await service.list("p1", "conv-b", "active")
        assert [r.id for r in found] == [b.id]
        assert {r.id for r in await service.list("p1")} == {a.id, b.id, done.id}
        assert [r.id for r in await service.list(None, None, "succeeded")] == [done.id]
        assert {r.id for r in await service.list(None, "conv-b")} == {b.id, done.id, other.id}


async def test_media_execution_policy_is_stored_and_shown() -> None:
    """The default policy is {"mode": "enabled"}; a given one is shown as given."""
    async with open_service(None) as service:
        plain = await service.create(RunCreate())
        scoped = await service.create(
            RunCreate.model_validate(
                {"mediaExecution": {"mode": "enabled", "allowedSurfaces": ["image"]}}
            )
        )
        assert plain.status_body().model_dump()["mediaExecution"] == {"mode": "enabled"}
        assert scoped.status_body().model_dump()["mediaExecution"] == {
            "mode": "enabled",
            "allowedSurfaces": ["image"],
        }


async def test_a_tool_bundle_is_stored_whole_but_shown_as_a_summary() -> None:
    """Invariant 8: the status body carries id, transport, enabled only."""
    bundle = {
        "mcpServers": [
            {
                "id": "run-tools",
                "transport": "stdio",
                "command": "node",
                "args": ["server.js", "--token=hunter2-secret"],
                "env": {"API_TOKEN": "hunter2-secret"},
            },
            {
                "id": "remote",
                "transport": "http",
                "url": "https://example.test/mcp?k=hunter2-secret",
                "headers": {"Authorization": "Bearer hunter2-secret"},
                "enabled": False,
            },
        ]
    }
    async with open_service(None) as service:
        run = await service.create(RunCreate.model_validate({"toolBundle": bundle}))
        stored = run.request.toolBundle
        assert stored is not None and stored.mcpServers[0].command == "node"
        assert stored.mcpServers[0].env == {"API_TOKEN": "hunter2-secret"}
        body = run.status_body().model_dump()
        assert body["toolBundle"] == {
            "mcpServers": [
                {"id": "run-tools", "transport": "stdio", "enabled": True, "label": None},
                {"id": "remote", "transport": "http", "enabled": False, "label": None},
            ]
        }
        text = json.dumps(body)
        for leaked in ("hunter2-secret", "server.js", "node", "example.test"):
            assert leaked not in text
        stored_row = await service.store.get(run.id)
        assert stored_row is not None and "hunter2" not in stored_row.body.model_dump_json()


async def test_shutdown_cancels_active_runs_with_sigterm_to_the_group(tmp_path: Path) -> None:
    """Invariant 9: SIGTERM to the group; status canceled; end carries the signal."""
    async with open_service(tmp_path / "data") as service:
        status = await service.start(signal_child(tmp_path, "exit"))
        await wait_ready(service, status.id)
        waited = {}

        async def waiter() -> None:
            waited["status"] = await service.wait(status.id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            results = await service.shutdown_active(grace=5)
        assert [r.id for r in results] == [status.id]
        body = await service.get(status.id)
        assert (body.status, body.cancelRequested, body.signal) == ("canceled", True, "SIGTERM")
        assert waited["status"].status == "canceled" and waited["status"].signal == "SIGTERM"
        log = read_log(body.eventsLogPath)
        assert_dense(log)
        assert log[-1]["data"] == {"status": "canceled", "code": None, "signal": "SIGTERM"}
        assert (tmp_path / "signals.txt").read_text().count("SIGTERM") == 1
        assert group_members(body.childPid) == []


async def test_shutdown_escalates_to_sigkill_when_the_group_ignores_sigterm(
    tmp_path: Path,
) -> None:
    """Invariant 9: after the grace, SIGKILL; a grandchild deaf to SIGTERM dies too."""
    async with open_service(tmp_path / "data") as service:
        status = await service.start(signal_child(tmp_path, "ignore", grandchild=True))
        await wait_ready(service, status.id)
        pgid = (await service.get(status.id)).childPid
        assert pgid is not None
        # The grandchild has started once the group has two members.
        members = await apoll(
            "the grandchild", lambda: len(group_members(pgid)) >= 2 and group_members(pgid), 5
        )
        await service.shutdown_active(grace=0.3)
        body = await service.get(status.id)
        assert (body.status, body.signal, body.cancelRequested) == ("canceled", "SIGKILL", True)
        assert (tmp_path / "signals.txt").read_text().count("SIGTERM") == 1
        assert group_members(pgid) == []
        for pid in members:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


class AbortingAdapter(CommandAdapter):
    """A command whose adapter can ask the agent to stop, as ACP and app-server can."""

    calls: list[str]

    async def abort(self) -> None:  # type: ignore[override]
        marker = Path(self.request.command[2]).parent / "signals.txt"  # type: ignore[index]
        with marker.open("a") as fh:
            fh.write(f"ABORT {os.getpid()}\n")
        self.calls.append("abort")


async def test_an_adapter_abort_hook_runs_before_any_signal(tmp_path: Path) -> None:
    """Invariant 9: adapter abort first, then SIGTERM to the group."""
    async with open_service(tmp_path / "data") as service:
        request = signal_child(tmp_path, "exit")
        adapter = AbortingAdapter(request)
        adapter.calls = []
        status = await service.start(request, adapter=adapter)
        await wait_ready(service, status.id)
        await service.shutdown_active(grace=0.3)
        assert adapter.calls == ["abort"]
        lines = (tmp_path / "signals.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == ["ABORT", "SIGTERM"]
        body = await service.get(status.id)
        assert (body.status, body.signal) == ("canceled", "SIGTERM")


async def collect(service: RunService, run_id: str, cursor: int) -> list[tuple[int, str]]:
    """(id, event) of every SSE frame run_frames sends, until the stream closes."""
    frames: list[tuple[int, str]] = []
    with anyio.fail_after(10):
        async for chunk in run_frames(service, run_id, cursor):
            for block in chunk.decode().split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if "id" in fields:
                    frames.append((int(fields["id"]), fields["event"]))
    return frames


@pytest.mark.parametrize("with_log", [True, False], ids=["log", "memory"])
async def test_reattaching_at_the_end_of_a_finished_run_replays_the_end(
    tmp_path: Path, with_log: bool
) -> None:
    """Invariant 6: a cursor at the end still gets `end`, then the stream closes."""
    async with open_service(tmp_path / "data" if with_log else None) as service:
        run = await service.create(RunCreate())
        service.emit(run, "stdout", {"text": "hello"})
        service.finish(run, "succeeded", 0)
        final = run.last_event_id
        assert await collect(service, run.id, final) == [(final, "end")]
        assert await collect(service, run.id, final + 50) == [(final, "end")]


async def test_a_cursor_before_the_end_gets_exactly_the_events_after_it(tmp_path: Path) -> None:
    """Invariant 5: no duplicate, no gap, from any cursor."""
    async with open_service(tmp_path / "data") as service:
        run = await service.create(RunCreate())
        for text in "abcde":
            service.emit(run, "stdout", {"text": text})
        service.finish(run, "succeeded", 0)
        for cursor in range(run.last_event_id + 1):
            got = await collect(service, run.id, cursor)
            assert [i for i, _ in got] == list(range(cursor + 1, run.last_event_id + 1)) or (
                cursor == run.last_event_id and got == [(cursor, "end")]
            )


async def test_every_event_is_one_jsonl_line_under_the_log_dir(tmp_path: Path) -> None:
    """Invariants 2 and 4: one whole line per event, dense ids, eventsLogPath points there."""
    data = tmp_path / "data"
    async with open_service(data) as service:
        run = await service.create(RunCreate(projectId="p1"))
        assert run.status_body().eventsLogPath == str((data / run.id / "events.jsonl").resolve())
        service.emit(run, "agent", {"type": "text_delta", "delta": "hello"})
        service.emit(run, "agent", {"type": "text_delta", "delta": " world\nline two"})
        service.finish(run, "succeeded", 0)
        log = read_log(data / run.id / "events.jsonl")
        assert_dense(log)
        assert [(e["event"], e["data"]) for e in log] == [
            ("agent", {"type": "text_delta", "delta": "hello"}),
            ("agent", {"type": "text_delta", "delta": " world\nline two"}),
            ("end", {"status": "succeeded", "code": 0, "signal": None}),
        ]
        assert all(e["ts"].endswith("Z") for e in log)


async def test_without_a_log_dir_nothing_touches_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eventsLogPath is null and no file appears anywhere we can see."""
    monkeypatch.chdir(tmp_path)
    async with open_service(None) as service:
        run = await service.create(RunCreate(projectId="p1"))
        assert run.status_body().eventsLogPath is None
        service.emit(run, "agent", {"type": "text_delta", "delta": "x"})
        service.finish(run, "succeeded", 0)
        items, more = await service.events(run.id)
        assert [e.event for e in items] == ["agent", "end"] and not more
    assert list(tmp_path.iterdir()) == []
