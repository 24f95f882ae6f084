"""One contract, every adapter: what a user sees of a run, whichever agent it drives.

Each case below runs once per adapter in the registry (od_runs.agents.ADAPTERS) through the
public RunService API only (start, wait, cancel, events, get), so the adapters' insides may
change freely. An adapter registered without a Case here fails every test of this file.

The cases: a clean run, a failing agent, a program that does not exist, a cancel mid-run,
a cancel of an agent that ignores SIGTERM (and whose grandchild does too), a cancel of an
agent that has said nothing yet, and an agent that prints what is not its protocol. Clean,
failing and mid-run cancel runs use the real pinned CLIs against the scripted model servers
in tests/fakes/ where the adapter drives one; the misbehaving agent is
tests/fakes/rogue_agent.py, put where the adapter looks for its program (OD_RUNS_*_BIN, the
run's `command`, or, for demo, an `od_runs.agents.demo_agent` module in the run's cwd, which
`python -m` finds before the installed one).

Every run is then held to the same checks (invariants 1-3 and 9): one `end`, last; event
ids 1..N without a gap, in events.jsonl as served; a `start` with the child's pid when a
child was spawned; the end's status, code and signal equal the status body's; and no
process left in the child's process group once the run is over. Where adapters differ
today (exit codes, error codes, what garbage becomes), each Case pins what it does; a case
that shows a bug is a strict xfail whose reason names it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio
import psutil
import pytest
from _pytest.mark import ParameterSet

from od_runs.agents import agent_ids
from od_runs.agents.claude import BINARY_ENV as CLAUDE_BIN
from od_runs.agents.codex import BINARY_ENV as CODEX_BIN
from od_runs.agents.demo_agent import session as demo_session
from od_runs.models import Event, RunCreate, RunStatus
from od_runs.runs import RunService, open_service

from .agent_runs import all_events, final_answer, process_tree, run_to_end
from .codex_helpers import APP_SERVER, CODEX, make_codex
from .conftest import RUN_DEADLINE, apoll, process_alive, read_log
from .fakes.anthropic_server import AnthropicServer, Block, Text
from .fakes.anthropic_server import Fail as AnthropicFail
from .fakes.responses_server import Fail, Item, Message, ResponsesServer
from .fakes.scripted_server import Hold
from .test_acp import CODEX_ACP, make_acp
from .test_claude import CLAUDE, make_claude

pytestmark = pytest.mark.anyio

ROGUE = Path(__file__).parent / "fakes" / "rogue_agent.py"
# The cancel grace of the cancel case: short, the child ignores SIGTERM anyway.
GRACE = 0.5
# What the rogue agent's garbage looks like once decoded (invalid UTF-8 becomes U+FFFD).
GARBAGE_TEXT = ("this is not json", "{not json either}", "[1, 2, 3]", "\ufffd\ufffd\x00\x01")
ANSWER = "The contract holds."
# How a test knows a run is under way: awaited with the service and the run's id.
Waiter = Callable[[RunService, str], Awaitable[None]]
HoldT = TypeVar("HoldT", bound=Hold[Any])


@dataclass
class Bench:
    """What a case needs: a scratch dir, the environment, the scripted model servers."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    stack: ExitStack
    _servers: dict[str, Any] = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        """The cwd of runs of the rogue agent (the real CLIs get their helpers' workspace)."""
        path = self.tmp_path / "workspace"
        path.mkdir(exist_ok=True)
        return path

    def responses(self) -> ResponsesServer:
        """The scripted Responses API (Codex, codex-app-server, codex-acp)."""
        if "responses" not in self._servers:
            self._servers["responses"] = self.stack.enter_context(ResponsesServer())
        return self._servers["responses"]  # type: ignore[no-any-return]

    def anthropic(self) -> AnthropicServer:
        """The scripted Messages API (Claude Code)."""
        if "anthropic" not in self._servers:
            self._servers["anthropic"] = self.stack.enter_context(AnthropicServer())
        return self._servers["anthropic"]  # type: ignore[no-any-return]

    def hold(self, hold: HoldT) -> HoldT:
        """A held model response, released when the test ends (before its server closes)."""
        self.stack.callback(hold.release)
        return hold

    def rogue(self, protocol: str, mode: str) -> tuple[Path, Path]:
        """An executable that runs the rogue agent; and the file it writes once under way."""
        ready = self.tmp_path / f"rogue-{mode}.json"
        exe = self.tmp_path / "bin" / f"rogue-{protocol}-{mode}"
        exe.parent.mkdir(exist_ok=True)
        args = " ".join(shlex.quote(a) for a in (sys.executable, str(ROGUE), protocol, mode))
        # exec: the agent's pid is the one od-runs spawned; the adapter's own args follow.
        exe.write_text(f'#!/bin/sh\nexec {args} {shlex.quote(str(ready))} "$@"\n')
        exe.chmod(0o755)
        return exe, ready


def event_logged(predicate: Callable[[Event], bool]) -> Waiter:
    """A waiter: returns once the run has logged an event that matches predicate."""

    async def wait(service: RunService, run_id: str) -> None:
        with anyio.fail_after(RUN_DEADLINE):
            while True:
                events = await all_events(service, run_id)
                if any(predicate(e) for e in events):
                    return
                await service.wait_for_events(run_id, events[-1].id if events else 0, 1.0)

    return wait


def reached(hold: Hold[Any]) -> Waiter:
    """A waiter: returns once the agent's model request is being held."""

    async def wait(service: RunService, run_id: str) -> None:
        await anyio.to_thread.run_sync(hold.wait_reached)

    return wait


class Case:
    """How the contract drives one adapter, and what it shows today where adapters differ."""

    agent: ClassVar[str]
    # The pinned CLIs its clean and failing runs drive.
    clis: ClassVar[tuple[str, ...]] = ()
    # How far the rogue agent plays along for it (see rogue_agent.py).
    protocol: ClassVar[str] = "lines"
    # The exit code of a clean run (None: the agent is not left to exit by itself).
    clean_exit: ClassVar[int | None] = 0
    # The failing run: (errorCode, exitCode).
    failure: ClassVar[tuple[str, int | None]]
    # The signal a cancel of a well-behaved agent ends with (None: the adapter's abort did it).
    cancel_signal: ClassVar[str | None] = "SIGTERM"
    # A cancel before the agent said anything: (exitCode, signal); None: not pinned (a bug).
    mute_cancel: ClassVar[tuple[int | None, str | None] | None] = (None, "SIGTERM")
    mute_bug: ClassVar[str | None] = None
    # The agent's process is its session's, readied before the run starts (app-server).
    session_process: ClassVar[bool] = False
    # The garbage run: (status, errorCode), and the garbage lines a user can still read.
    garbage: ClassVar[tuple[str, str | None]]
    garbage_kept: ClassVar[tuple[str, ...]] = ()
    # A known bug the garbage case shows (the test is xfail, strict, for this reason).
    garbage_bug: ClassVar[str | None] = None

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def request(self, **fields: Any) -> RunCreate:
        """A run of this agent in the bench's workspace."""
        fields.setdefault("cwd", str(self.bench.workdir))
        return RunCreate(agentId=self.agent, prompt="Say hello.", **fields)

    def program(self, exe: Path) -> RunCreate:
        """A run whose agent program is exe, chosen the way this adapter chooses it."""
        raise NotImplementedError

    def missing(self, path: Path) -> RunCreate:
        """A run whose agent program is path, which does not exist."""
        return self.program(path)

    def clean(self) -> tuple[RunCreate, str | None]:
        """A run that succeeds, and its final answer (None: the agent has no such thing)."""
        raise NotImplementedError

    def failing(self) -> RunCreate:
        """A run in which the agent fails."""
        exe, _ = self.bench.rogue(self.protocol, "fail")
        return self.program(exe)

    def busy(self) -> tuple[RunCreate, Waiter]:
        """A run that goes on until canceled, and how to know it is under way."""
        raise NotImplementedError


class DemoCase(Case):
    agent = "demo"
    failure = ("AGENT_EXITED", 3)
    garbage = ("succeeded", None)
    garbage_kept = GARBAGE_TEXT

    def program(self, exe: Path) -> RunCreate:
        """demo runs `python -m od_runs.agents.demo_agent` in the run's cwd: shadow it there."""
        shadow = self.bench.tmp_path / "demo-cwd"
        agents = shadow / "od_runs" / "agents"
        agents.mkdir(parents=True, exist_ok=True)
        (shadow / "od_runs" / "__init__.py").write_text("")
        (agents / "__init__.py").write_text("")
        (agents / "demo_agent.py").write_text(
            f"import os\nos.execv({str(exe)!r}, [{str(exe)!r}])\n"
        )
        return self.request(cwd=str(shadow))

    def missing(self, path: Path) -> RunCreate:
        """demo's program is the daemon's own interpreter: make that the missing one."""
        self.bench.monkeypatch.setattr(sys, "executable", str(path))
        return self.request()

    def clean(self) -> tuple[RunCreate, str | None]:
        final = demo_session("Say hello.", 8)[-1]["text"]
        return self.request(demo={"events": 8, "fast": True}), str(final)

    def busy(self) -> tuple[RunCreate, Waiter]:
        request = self.request(demo={"events": 40, "durationSeconds": 120})
        return request, event_logged(lambda e: e.event == "agent")


class CommandCase(Case):
    agent = "command"
    failure = ("AGENT_EXITED", 3)
    garbage = ("succeeded", None)
    garbage_kept = GARBAGE_TEXT

    def program(self, exe: Path) -> RunCreate:
        return self.request(command=[str(exe)])

    def clean(self) -> tuple[RunCreate, str | None]:
        return self.request(command=[sys.executable, "-c", f"print({ANSWER!r})"]), None

    def busy(self) -> tuple[RunCreate, Waiter]:
        code = "import signal; print('working', flush=True); signal.pause()"
        request = self.request(command=[sys.executable, "-c", code])
        return request, event_logged(lambda e: e.event == "stdout")


class BinaryCase(Case):
    """An adapter whose program is a binary named by an OD_RUNS_*_BIN variable."""

    binary_env: ClassVar[str]

    def program(self, exe: Path) -> RunCreate:
        self.bench.monkeypatch.setenv(self.binary_env, str(exe))
        return self.request()


class CodexCase(BinaryCase):
    agent = "codex"
    clis = ("codex",)
    binary_env = CODEX_BIN
    failure = ("PROVIDER_AUTH_FAILED", 1)
    # Warnings name each line; an exit without turn.completed is not a success.
    garbage = ("failed", "AGENT_PROTOCOL_ERROR")
    garbage_kept = GARBAGE_TEXT

    def scripted(self, *turns: Any) -> RunCreate:
        """A run of the pinned Codex on the scripted Responses API."""
        self.bench.monkeypatch.setenv(CODEX_BIN, str(CODEX))
        server = self.bench.responses()
        server.script(*turns)
        codex = make_codex(self.bench.tmp_path, server, self.agent)
        return codex.request(conversationId=None)

    def clean(self) -> tuple[RunCreate, str | None]:
        return self.scripted([Message(ANSWER)]), ANSWER

    def failing(self) -> RunCreate:
        return self.scripted(Fail(401, times=None))

    def busy(self) -> tuple[RunCreate, Waiter]:
        hold = self.bench.hold(Hold[Item](after=[Message("too late")]))
        return self.scripted(hold), reached(hold)


class AppServerCase(CodexCase):
    agent = APP_SERVER
    protocol = "app-server"
    # A run is a turn on a session process, which does not exit with the turn: no exit code.
    clean_exit = None
    failure = ("PROVIDER_AUTH_FAILED", None)
    # turn/interrupt ends the turn: no signal (a one-off session is then retired politely).
    cancel_signal = None
    mute_cancel = None
    session_process = True
    # The peer stops reading at the first line that is not JSON-RPC; nothing of it is shown.
    garbage = ("failed", "AGENT_PROTOCOL_ERROR")
    garbage_kept = ()


class ClaudeCase(BinaryCase):
    agent = "claude"
    clis = ("claude",)
    binary_env = CLAUDE_BIN
    failure = ("PROVIDER_AUTH_FAILED", 1)
    garbage = ("failed", "AGENT_PROTOCOL_ERROR")
    garbage_kept = GARBAGE_TEXT

    def scripted(self, *turns: Any) -> RunCreate:
        """A run of the pinned Claude Code on the scripted Messages API."""
        self.bench.monkeypatch.setenv(CLAUDE_BIN, str(CLAUDE))
        server = self.bench.anthropic()
        server.script(*turns)
        return make_claude(self.bench.tmp_path, server).request()

    def clean(self) -> tuple[RunCreate, str | None]:
        return self.scripted([Text(ANSWER)]), ANSWER

    def failing(self) -> RunCreate:
        return self.scripted(AnthropicFail(401, times=None))

    def busy(self) -> tuple[RunCreate, Waiter]:
        hold = self.bench.hold(Hold[Block](after=[Text("too late")]))
        return self.scripted(hold), reached(hold)


class AcpCase(Case):
    agent = "acp"
    clis = ("codex-acp",)
    protocol = "acp"
    # codex-acp does not exit when its stdin closes: once the turn is over the adapter ends it
    # with the signal ladder, so even a clean run has no exit code.
    clean_exit = None
    failure = ("PROVIDER_AUTH_FAILED", None)
    # No turn to cancel yet: the adapter hangs up (stdin closed) and the agent leaves.
    mute_cancel = (0, None)
    # Skipped with one warning naming the first line; the turn goes on and ends well.
    garbage = ("succeeded", None)
    garbage_kept = GARBAGE_TEXT[:1]

    def program(self, exe: Path) -> RunCreate:
        return self.request(command=[str(exe)])

    def scripted(self, *turns: Any) -> RunCreate:
        """A run of the pinned codex-acp on the scripted Responses API."""
        server = self.bench.responses()
        server.script(*turns)
        return make_acp(self.bench.tmp_path, server).request(command=[str(CODEX_ACP)])

    def clean(self) -> tuple[RunCreate, str | None]:
        return self.scripted([Message(ANSWER)]), ANSWER

    def failing(self) -> RunCreate:
        return self.scripted(Fail(401, times=None))

    def busy(self) -> tuple[RunCreate, Waiter]:
        hold = self.bench.hold(Hold[Item](after=[Message("too late")]))
        return self.scripted(hold), reached(hold)


CASES: dict[str, type[Case]] = {
    case.agent: case
    for case in (DemoCase, CommandCase, CodexCase, AppServerCase, ClaudeCase, AcpCase)
}


def every_adapter(with_clis: bool = False, bug: str | None = None) -> list[ParameterSet]:
    """One parameter per registered adapter; with_clis marks those whose case drives a CLI,
    bug (a Case attribute) those whose case shows a known bug as slow, strict xfails."""
    params = []
    for agent in agent_ids():
        case = CASES.get(agent)
        marks: list[pytest.MarkDecorator] = []
        if with_clis and case is not None and case.clis:
            marks.append(pytest.mark.needs_cli(*case.clis))
        reason = getattr(case, bug) if case is not None and bug else None
        if reason:
            marks += [pytest.mark.slow, pytest.mark.xfail(strict=True, reason=reason)]
        params.append(pytest.param(agent, id=agent, marks=marks))
    return params


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    with ExitStack() as stack:
        yield Bench(tmp_path, monkeypatch, stack)


def case_of(agent: str, bench: Bench) -> Case:
    """The adapter's case; a registered adapter without one fails the test."""
    if agent not in CASES:
        pytest.fail(f"adapter {agent!r} is registered but has no Case in {Path(__file__).name}")
    return CASES[agent](bench)


# What every run must show ------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live processes in a process group (zombies are dead, only not yet reaped)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def check_run(body: RunStatus, events: list[Event], *, spawned: bool = True) -> None:
    """Invariants 1-3 and 9: the shape every run has, whichever adapter ran it."""
    names = [e.event for e in events]
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert names.count("end") == 1 and names[-1] == "end", names
    end = events[-1].data
    assert (end["status"], end["code"], end["signal"]) == (body.status, body.exitCode, body.signal)
    assert end.get("errorCode") == (body.errorCode if body.status == "failed" else None)
    assert body.lastEventId == len(events)
    logged = read_log(body.eventsLogPath or "")
    assert [(e["id"], e["event"], e["data"]) for e in logged] == [
        (e.id, e.event, e.data) for e in events
    ]
    starts = [e.data for e in events if e.event == "start"]
    if not spawned:
        assert (starts, body.childPid) == ([], None)
        return
    assert names[0] == "start" and len(starts) == 1
    assert starts[0]["pid"] == body.childPid and body.childPid and body.childPid > 0
    assert starts[0]["agentId"] == body.agentId
    assert group_members(body.childPid) == []


async def wait_ready(ready: Path) -> list[int]:
    """The rogue agent's pids, once it says its turn is under way."""

    def pids() -> list[int] | None:
        try:
            return [int(pid) for pid in json.loads(ready.read_text())]
        except (OSError, ValueError):
            return None

    return await apoll("the rogue agent to be ready", pids)  # type: ignore[no-any-return]


def texts(events: list[Event]) -> list[str]:
    """Every line of output a user can read in the events: stdout/stderr, warning lines."""
    found = []
    for e in events:
        if e.event in ("stdout", "stderr"):
            found.append(e.data["text"])
        elif e.event == "agent" and e.data.get("type") == "warning" and "line" in e.data:
            found.append(e.data["line"])
    return found


# The cases ---------------------------------------------------------------------------------


def test_every_registered_adapter_has_a_contract_case() -> None:
    """A new adapter is held to the contract as soon as it is registered."""
    assert sorted(CASES) == agent_ids()


@pytest.mark.parametrize("agent", every_adapter(with_clis=True))
async def test_a_clean_run_succeeds_with_its_exit_code_and_final_answer(
    agent: str, bench: Bench, data_dir: Path
) -> None:
    """Clean exit: succeeded with the exit code the case pins (0 where the agent exits by
    itself) and the final answer, where the agent has one."""
    case = case_of(agent, bench)
    request, answer = case.clean()
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, request)
        check_run(body, events)
    assert (body.status, body.errorCode, body.error, body.signal) == ("succeeded", None, None, None)
    assert body.exitCode == case.clean_exit
    assert final_answer(events) == answer
    if answer is None:
        assert ANSWER in texts(events)


@pytest.mark.parametrize("agent", every_adapter(with_clis=True))
async def test_a_failing_agent_fails_the_run_with_its_error_code(
    agent: str, bench: Bench, data_dir: Path
) -> None:
    """Failure exit: failed, the adapter's errorCode, the exit code; no final answer."""
    case = case_of(agent, bench)
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, case.failing())
        check_run(body, events)
    assert (body.status, body.errorCode, body.exitCode) == ("failed", *case.failure)
    assert body.error and "\n" not in body.error
    assert final_answer(events) is None


@pytest.mark.parametrize("agent", every_adapter())
async def test_a_missing_program_fails_with_agent_not_found(
    agent: str, bench: Bench, data_dir: Path
) -> None:
    """Spawn failure: AGENT_NOT_FOUND naming the program; nothing was started."""
    missing = bench.tmp_path / "no-such-dir" / f"no-such-{agent}"
    request = case_of(agent, bench).missing(missing)
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, request)
        check_run(body, events, spawned=False)
    assert (body.status, body.errorCode, body.retryable) == ("failed", "AGENT_NOT_FOUND", False)
    assert body.error and str(missing) in body.error
    assert [e.event for e in events] == ["end"]


@pytest.mark.parametrize("agent", every_adapter(with_clis=True))
async def test_cancel_mid_run_returns_canceled_once_the_group_is_gone(
    agent: str, bench: Bench, data_dir: Path
) -> None:
    """Invariant 9: a cancel of a working agent is canceled, and when cancel returns, nothing
    of the run's process group is left (its descendants included)."""
    case = case_of(agent, bench)
    request, under_way = case.busy()
    async with open_service(data_dir, grace=5.0) as service:
        started = await service.start(request)
        await under_way(service, started.id)
        running = await service.get(started.id)
        assert running.status == "running" and running.childPid is not None
        tree = process_tree(running.childPid)
        body = await service.cancel(started.id)
        left = group_members(running.childPid)
        events = await all_events(service, started.id)
    assert left == [] and not [pid for pid in tree if process_alive(pid)]
    assert (body.status, body.errorCode, body.signal) == ("canceled", None, case.cancel_signal)
    assert final_answer(events) is None
    check_run(body, events)


async def running_body(service: RunService, run_id: str) -> RunStatus | None:
    """The run's status body once it is running, else None."""
    body = await service.get(run_id)
    return body if body.status == "running" else None


@pytest.mark.parametrize("agent", every_adapter())
async def test_cancel_of_an_agent_that_ignores_sigterm_kills_its_group_after_the_grace(
    agent: str, bench: Bench, data_dir: Path
) -> None:
    """Invariant 9: canceled, SIGKILL after the grace, and cancel returns with the group gone."""
    case = case_of(agent, bench)
    exe, ready = bench.rogue(case.protocol, "hang")
    async with open_service(data_dir, grace=GRACE) as service:
        started = await service.start(case.program(exe))
        pids = await wait_ready(ready)
        # The child can write its ready file before the daemon has marked the run running.
        running = await apoll("the run is running", lambda: running_body(service, started.id))
        assert running.childPid == pids[0]
        began = time.monotonic()
        body = await service.cancel(started.id, GRACE)
        took = time.monotonic() - began
        # Right as cancel returns: not a moment later.
        left = group_members(pids[0])
        events = await all_events(service, started.id)
    assert left == [] and not [pid for pid in pids if process_alive(pid)]
    assert (body.status, body.errorCode, body.exitCode, body.signal) == (
        "canceled",
        None,
        None,
        "SIGKILL",
    )
    assert GRACE <= took < GRACE * 4 + 5, f"cancel took {took:.1f} s"
    check_run(body, events)


@pytest.mark.parametrize("agent", every_adapter(bug="mute_bug"))
async def test_cancel_before_the_agent_says_anything_is_prompt(
    agent: str, bench: Bench, data_dir: Path
) -> None:
    """Invariant 9: an agent that has not answered anything yet (not even a handshake) is
    canceled within the grace, and nothing of its group is left."""
    case = case_of(agent, bench)
    exe, ready = bench.rogue(case.protocol, "mute")
    async with open_service(data_dir, grace=GRACE) as service:
        started = await service.start(case.program(exe))
        (pid,) = await wait_ready(ready)
        began = time.monotonic()
        body = await service.cancel(started.id, GRACE)
        took = time.monotonic() - began
        left = group_members(pid)
        events = await all_events(service, started.id)
    assert (body.status, body.errorCode, left) == ("canceled", None, [])
    assert took < GRACE * 4 + 5, f"cancel took {took:.1f} s"
    if case.mute_cancel is not None:
        assert (body.exitCode, body.signal) == case.mute_cancel
    # A session run starts only once its session's process answered; this one never did.
    check_run(body, events, spawned=not case.session_process)


@pytest.mark.parametrize("agent", every_adapter(bug="garbage_bug"))
async def test_output_that_is_not_the_protocol_is_kept_or_fails_the_run_clearly(
    agent: str, bench: Bench, data_dir: Path
) -> None:
    """Garbage output (text, braces, a JSON array, invalid UTF-8): the service carries on,
    and the run ends as the adapter says today, with the lines it keeps readable."""
    case = case_of(agent, bench)
    exe, _ = bench.rogue(case.protocol, "garbage")
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, case.program(exe))
        check_run(body, events)
        after, _ = await run_to_end(
            service, RunCreate(agentId="command", command=[sys.executable, "-c", "print(1)"])
        )
    assert after.status == "succeeded"
    assert (body.status, body.errorCode) == case.garbage
    shown = texts(events)
    assert [line for line in case.garbage_kept if line not in shown] == []
    if body.status == "failed":
        assert body.error and "\n" not in body.error
