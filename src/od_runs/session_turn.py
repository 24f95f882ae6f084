"""A session's process and one run's turn on it (sessions.py keeps them per conversation).

`Live` is a session's running process with our JSON-RPC connection to it; `Session` is what
the daemon holds of a session; `Turn` is one run's turn: the adapter speaks the protocol, the
session carries the messages, and stop() interrupts it (signals only past the grace).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from .agents.base import EventItem, SessionAdapter, TurnEnded
from .agents.jsonrpc import JsonRpcPeer, Notification, PeerClosed, RpcError
from .agents.process import Child, is_alive
from .encoding import now_iso
from .failures import failure
from .models import RunError, SessionDetail, SessionEvent

log = logging.getLogger("od_runs.sessions")

# Events a session keeps (and GET /api/sessions/{id} shows).
RECENT_EVENTS = 50
# stderr lines kept per process, to classify how it died.
STDERR_TAIL_LINES = 50
# How long we wait for a dead process's exit status before reporting without it.
EXIT_WAIT = 2.0

Sink = Callable[[list[EventItem]], None]
_T = TypeVar("_T")


class TurnCanceled(Exception):
    """The run was canceled while its session's process was still being readied."""


async def unless_canceled(
    canceled: anyio.Event | None, work: Callable[[], Awaitable[_T]], session_id: str
) -> _T:
    """work(), given up (TurnCanceled) as soon as canceled is set; its own errors as they are."""
    if canceled is None:
        return await work()
    done: list[_T] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def give_up() -> None:
            await canceled.wait()
            tg.cancel_scope.cancel()

        async def do() -> None:
            try:
                done.append(await work())
            except Exception as exc:
                # Raised below, as itself: a task group would wrap it in a group.
                failed.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(give_up)
        tg.start_soon(do)
    if failed:
        raise failed[0]
    if not done:
        raise TurnCanceled(session_id)
    return done[0]


@dataclass(eq=False)
class Live:
    """A session's running process and our JSON-RPC connection to it."""

    child: Child
    peer: JsonRpcPeer
    env_digest: str
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    # Set once the process's output has ended and the process has (probably) exited.
    gone: anyio.Event = field(default_factory=anyio.Event)
    last_used: float = 0.0
    # How the process got its thread ("started" or "resumed"), and turns it has run.
    thread_opened: str = "started"
    turns: int = 0


@dataclass(eq=False)
class Session:
    """A session in memory: its stored body, and its process while it has one."""

    body: SessionDetail
    live: Live | None = None
    turn: Turn | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    # Saves under way and saves done: a look at the stored row is only current for the
    # session if neither moved meanwhile (cluster.py compares them around its query).
    saving: int = 0
    saved: int = 0
    # Another daemon retired or took over the stored row: this one writes it no more.
    moved: bool = False

    @property
    def id(self) -> str:
        """The session id (ses-…)."""
        return self.body.id

    def alive(self) -> bool:
        """True if the process is there and still speaking the protocol."""
        live = self.live
        return (
            live is not None
            and not live.peer.closed.is_set()
            and live.child.returncode is None
            and is_alive(live.child.pid)
        )


class Turn:
    """One run's turn on a session: the adapter speaks, the session carries the messages."""

    def __init__(self, session: Session, live: Live, adapter: SessionAdapter, run_id: str):
        self.session = session
        self.live = live
        self.adapter = adapter
        self.run_id = run_id
        self.pid = live.child.pid
        self.start_time = live.child.start_time
        self.done = anyio.Event()
        self.sent = anyio.Event()
        self.must_retire: str | None = None
        # Set once the agent accepted turn/start (there is a turn to interrupt).
        self.accepted = False
        self._sink: Sink = drop

    @property
    def session_id(self) -> str:
        """The id of the session this turn runs on."""
        return self.session.id

    async def run(self, sink: Sink) -> None:
        """Start the turn and return when it ended, or when the process is lost."""
        self._sink = sink
        peer, adapter = self.live.peer, self.adapter
        thread = self.session.body.threadId
        assert thread is not None
        peer.on_notifications = self._on_batch
        peer.on_request = self._on_request
        first = self.live.turns == 0
        self.live.turns += 1
        opened = {
            "type": "session",
            "sessionId": self.session.id,
            "threadId": thread,
            "process": "spawned" if first else "reused",
            "resumed": not (first and self.live.thread_opened == "started"),
        }
        sink([("agent", opened), *adapter.notes()])
        try:
            await adapter.start_turn(peer, thread)
            self.accepted = True
        except (PeerClosed, TimeoutError):
            self.done.set()
        except BaseException:
            self.done.set()  # refused (AgentFailure): a stop() waiting on it has nothing to stop
            raise
        finally:
            self.sent.set()
        await self.done.wait()
        if self.ended() or self.must_retire is not None:
            return  # ended, or stop() ended it on purpose (and said why)
        if not peer.closed.is_set():
            self.must_retire = "its turn did not end"
            return
        if peer.garbage is None:  # it died: wait for the exit status that says how
            with anyio.move_on_after(EXIT_WAIT):
                await self.live.child.wait()
        stderr = "\n".join(self.live.stderr_tail)
        adapter.session_lost(peer.garbage, self.live.child.returncode, stderr)
        self.must_retire = (
            "it sent something that is not JSON-RPC" if peer.garbage else "its process died"
        )

    def ended(self) -> bool:
        """True once the agent said the turn is over."""
        return isinstance(self.adapter.progress(), TurnEnded)

    def _on_batch(self, batch: list[Notification]) -> None:
        items = self.adapter.translate_batch(batch)
        self._sink(items)
        if self.ended():
            self.done.set()

    async def _on_request(self, method: str, params: Any) -> Any:
        result, items = await self.adapter.answer(method, params)
        self._sink(items)
        if isinstance(result, RpcError):
            raise result
        return result

    async def stop(self, grace: float, retire: bool) -> str | None:
        """Interrupt the turn (turn/interrupt); signals only if it does not end within grace
        or retire is asked for (a watchdog fired). Returns the last signal sent, if any."""
        peer = self.live.peer
        if not self.done.is_set() and not peer.closed.is_set():
            with anyio.move_on_after(grace):
                await self.sent.wait()
                self._sink(
                    [
                        (
                            "agent",
                            {
                                "type": "interrupt",
                                "via": "turn/interrupt",
                                "turnId": self.adapter.turn_id,
                                "reason": "watchdog" if retire else "cancel",
                            },
                        )
                    ]
                )
                note(self.session, "interrupt", runId=self.run_id)
                try:
                    await self.adapter.abort_turn(peer, self.session.body.threadId or "")
                except (RpcError, PeerClosed, TimeoutError) as exc:
                    log.info("session %s: interrupt failed: %s", self.session.id, exc)
                await self.done.wait()
        if not retire and self.done.is_set():
            if self.ended():
                return None
            if not self.accepted and not peer.closed.is_set():
                return None  # the turn never started: the process is fine as it is
        self.must_retire = self.must_retire or (
            "its turn hit a watchdog" if retire else "its turn did not stop within the grace period"
        )
        return await stop_process(self.live, grace)


async def stop_process(live: Live, grace: float) -> str | None:
    """Close stdin (Codex exits on it), then SIGTERM, grace, SIGKILL to the group."""
    return await live.child.stop(grace, live.child.close_stdin)


def note(session: Session, kind: str, **data: Any) -> None:
    """Append a recent event to the session (saved with its next write)."""
    events = session.body.recentEvents
    events.append(SessionEvent(ts=now_iso(), type=kind, data=data))
    del events[:-RECENT_EVENTS]


def drop(items: list[EventItem]) -> None:
    pass


def death_reason(live: Live) -> str:
    if live.peer.garbage is not None:
        return "it sent something that is not JSON-RPC"
    code = live.child.returncode
    if code is None:
        return "it closed its output"
    if code < 0:
        return f"its process was killed by signal {-code}"
    return f"its process exited with code {code}"


def startup_error(
    exc: Exception, returncode: int | None, adapter: SessionAdapter, stderr: list[str]
) -> RunError:
    if returncode == 127:
        return failure(
            "AGENT_NOT_FOUND",
            "The agent or its interpreter (node) was not found (exit 127); "
            f"{adapter.install_hint}.",
        )
    if isinstance(exc, TimeoutError):
        return failure("AGENT_PROTOCOL_ERROR", "The agent did not answer its handshake in time.")
    if isinstance(exc, RpcError):
        return failure("AGENT_PROTOCOL_ERROR", f"The agent refused its handshake: {exc.message}")
    how = f"exited with code {returncode}" if returncode is not None else "closed its output"
    # The agent's own last "Error: ..." line is what a person can act on (a bad config key);
    # the rest of stderr is chatter and stays in the daemon log.
    said = next((line for line in reversed(stderr) if line.lower().startswith("error")), "")
    detail = f": {short_line(said)}" if said else ""
    return failure("AGENT_EXITED", f"The agent {how} during its handshake{detail}.")


def short_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
