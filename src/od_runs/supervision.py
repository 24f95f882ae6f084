"""Supervision: drive each run's adapter from its turn in the conversation to its end.

A run either has a child of its own (execute_child: managed_process spawns it, its output
pipes become events, the watchdog and cancel stop it) or is one turn on its conversation's
live session (execute_turn: sessions.py lends the process). Both end in conclude(), which
turns the adapter's typed outcome, a cancel, or the daemon's own stop into the finish.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from .agents import Adapter
from .agents.base import EventItem, Failed, Going, SessionAdapter, TurnEnded
from .agents.lines import pump
from .agents.process import DRAIN_TIMEOUT, Child, managed_process, signal_name
from .agents.watchdog import Watchdog
from .failures import AgentFailure, failure
from .lifecycle import Lifecycle
from .live_run import Run
from .models import RunError, RunStatus
from .sessions import SessionManager, TurnCanceled
from .workspaces import WorkspaceError

log = logging.getLogger("od_runs.supervision")

# The marker every child inherits, so recovery can find a run's processes after a crash.
RUN_ID_ENV = "OD_RUNS_RUN_ID"


class Supervisor:
    """Runs each run's adapter to its end; the lifecycle records what happens."""

    def __init__(self, lifecycle: Lifecycle, sessions: SessionManager) -> None:
        self.lifecycle = lifecycle
        self.sessions = sessions

    async def supervise(self, run: Run) -> None:
        """Wait for the run's turn in its conversation, then execute it."""
        adapter = run.adapter
        assert adapter is not None and run.ticket is not None
        conversations = self.lifecycle.conversations
        async with conversations.turn(run.ticket, run.cancel_event, adapter.session_ref) as go:
            if not go:
                self.lifecycle.finish(run, "canceled")
                return
            await self._execute(run, adapter)

    async def _execute(self, run: Run, adapter: Adapter) -> None:
        """Execute the run however it ends: any failure becomes the run's error."""
        lifecycle = self.lifecycle
        if run.cancel_requested:
            lifecycle.finish(run, "canceled")
            return
        try:
            assert run.ticket is not None
            if lifecycle.starting is not None and not await lifecycle.starting(run):
                return  # its lease moved on meanwhile: another daemon has it (invariant 11)
            await self.prepare_workspace(run)
            session = await lifecycle.conversations.session_to_resume(run.ticket, self._history)
            if session is not None:
                adapter.resume(session)
            if isinstance(adapter, SessionAdapter):
                await self._execute_turn(run, adapter)
            else:
                await self._execute_child(run, adapter)
        except AgentFailure as exc:
            lifecycle.emit_error(run, exc.error)
            await self.conclude_workspace(run)
            lifecycle.finish(run, "failed", error=exc.error)
        except FileNotFoundError as exc:
            await self.conclude_workspace(run)
            hint = f"; {adapter.install_hint}" if adapter.install_hint else ""
            lifecycle.finish(
                run,
                "failed",
                error=failure(
                    "AGENT_NOT_FOUND",
                    f"The agent's program was not found: {exc.filename or exc}{hint}.",
                ),
            )
        except PermissionError as exc:
            await self.conclude_workspace(run)
            error = RunError(code="AGENT_SPAWN_FAILED", message=f"Cannot start the agent: {exc}")
            lifecycle.finish(run, "failed", error=error)
        except OSError as exc:
            log.exception("run %s: I/O failure", run.id)
            await self.conclude_workspace(run)
            code = "LOG_WRITE_FAILED" if run.has_child else "AGENT_SPAWN_FAILED"
            lifecycle.finish(run, "failed", error=RunError(code=code, message=f"{exc}"))
        except Exception as exc:
            log.exception("run %s: internal error", run.id)
            await self.conclude_workspace(run)
            error = RunError(code="INTERNAL_ERROR", message=type(exc).__name__)
            lifecycle.finish(run, "failed", error=error)
        finally:
            adapter.cleanup()
            if not run.terminal:
                lifecycle.finish(run, "canceled" if run.cancel_requested else "failed")

    async def _history(self, conversation_id: str) -> list[RunStatus]:
        store = self.lifecycle.store
        await store.flush()  # the conversation's last run may have only just finished
        return await store.list(conversation_id=conversation_id, limit=50)

    def _deliver(
        self, run: Run, adapter: Adapter, watchdog: Watchdog, items: list[EventItem]
    ) -> None:
        """Log a batch of the adapter's events and act on where it says the run stands."""
        state = adapter.progress()
        watchdog.touch(isinstance(state, Going) and state.after_tool)
        self.lifecycle.emit_many(run, items)
        if isinstance(state, Failed):
            self.lifecycle.stop_with(run, state.error)

    # A child of the run's own --------------------------------------------------------------

    async def _execute_child(self, run: Run, adapter: Adapter) -> None:
        lifecycle = self.lifecycle
        stdin = adapter.stdin()
        # An adapter that owns stdio (ACP) speaks its protocol over the child's stdin/stdout.
        speaks_protocol = adapter.owns_stdio
        watchdog = Watchdog.for_run(run.request, adapter.default_idle_timeout_ms)

        def deliver(items: list[EventItem]) -> None:
            self._deliver(run, adapter, watchdog, items)

        def from_stream(stream: Any) -> Any:
            def handle(lines: list[tuple[str, bool]]) -> None:
                deliver(adapter.translate(stream, lines))

            return handle

        async with managed_process(
            adapter.argv(),
            env=adapter.env(),
            cwd=run.request.cwd,
            stdin=speaks_protocol or stdin is not None,
            marker=(RUN_ID_ENV, run.id),
            stderr=from_stream("stderr"),
            grace=lifecycle.grace,
            abort=adapter.abort,
        ) as child:
            run.has_child = True
            lifecycle.mark_running(run, child.pid, child.start_time)
            # The pid must be durable before anything else: crash recovery kills by it.
            await lifecycle.store.flush()
            lifecycle.emit(run, "start", {"agentId": run.request.agentId, "pid": child.pid})
            lifecycle.status_changed(run)

            async def stop_on_cancel() -> None:
                await run.cancel_event.wait()
                run.signal_sent = await child.stop(run.cancel_grace, adapter.abort)

            watching = anyio.CancelScope()

            async def watch() -> None:
                with watching:
                    expiry = await watchdog.expired()
                    lifecycle.stop_with(run, _expiry_error(expiry, watchdog))

            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_on_cancel)
                async with anyio.create_task_group() as readers:
                    stdout_done = anyio.Event()

                    async def read_stdout() -> None:
                        try:
                            if speaks_protocol:
                                await adapter.converse(child, deliver)
                            else:
                                assert child.process.stdout is not None
                                await pump(child.process.stdout, from_stream("stdout"))
                        finally:
                            stdout_done.set()

                    readers.start_soon(read_stdout)
                    readers.start_soon(watch)
                    if stdin is not None and not speaks_protocol:
                        readers.start_soon(_feed_stdin, child, stdin)
                    await child.wait()
                    watching.cancel()
                    # Grandchildren may hold the pipes open; they die with the run.
                    with anyio.move_on_after(DRAIN_TIMEOUT):
                        await stdout_done.wait()
                        await child.stderr_closed.wait()
                    readers.cancel_scope.cancel()
                if not run.cancel_event.is_set():
                    tg.cancel_scope.cancel()
        await self.conclude_workspace(run)
        self.conclude(run, adapter, child.returncode)

    # A turn on the conversation's session -------------------------------------------------

    async def _execute_turn(self, run: Run, adapter: SessionAdapter) -> None:
        """Run one turn on the conversation's live session: no child of the run's own."""
        lifecycle = self.lifecycle
        try:
            await self._turn_on_session(run, adapter)
        except TurnCanceled:
            # Canceled while its process was still starting: nothing ran, nothing to stop.
            error = run.log_error or run.stop_error
            lifecycle.finish(run, "failed" if error else "canceled", error=error)

    async def _turn_on_session(self, run: Run, adapter: SessionAdapter) -> None:
        lifecycle = self.lifecycle
        canceled = run.cancel_event
        async with self.sessions.turn(run.id, run.request, adapter, canceled) as turn:
            lifecycle.mark_running(run, turn.pid, turn.start_time)
            await lifecycle.store.flush()
            start = {"agentId": run.request.agentId, "pid": turn.pid, "sessionId": turn.session_id}
            lifecycle.emit(run, "start", start)
            lifecycle.status_changed(run)
            if run.cancel_requested:
                await self.conclude_workspace(run)
                lifecycle.finish(run, "canceled")
                return
            watchdog = Watchdog.for_turn(
                run.request, adapter.default_idle_timeout_ms, adapter.default_post_tool_timeout_ms
            )

            def deliver(items: list[EventItem]) -> None:
                self._deliver(run, adapter, watchdog, items)

            async def watch() -> None:
                lifecycle.stop_with(run, _expiry_error(await watchdog.expired(), watchdog))

            async def stop_on_cancel() -> None:
                await run.cancel_event.wait()
                with anyio.CancelScope(shield=True):
                    retire = run.stop_error is not None
                    run.signal_sent = await turn.stop(run.cancel_grace, retire)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                tg.start_soon(stop_on_cancel)
                await turn.run(deliver)
                tg.cancel_scope.cancel()
        # After the session settled (retired if it must be): the end says it all.
        state = adapter.progress()
        interrupted = isinstance(state, TurnEnded) and state.status == "interrupted"
        if interrupted and run.stop_error is None:
            run.cancel_requested = True  # interrupted by anyone is canceled, not failed
        await self.conclude_workspace(run)
        self.conclude(run, adapter, None)

    # The worktree (workspaces.py) ----------------------------------------------------------

    async def prepare_workspace(self, run: Run) -> None:
        """Before the agent: make the run's worktree exist (its cwd is inside it)."""
        plan = run.workspace
        if plan is None:
            return
        try:
            await self.lifecycle.workspaces.prepare(plan, run.id)
        except WorkspaceError as exc:
            raise AgentFailure(
                failure("WORKSPACE_FAILED", f"The run's worktree could not be made: {exc}.")
            ) from exc
        run.workspace_prepared = True
        if not await anyio.Path(run.request.cwd or plan.path).is_dir():
            message = f"cwd is not a directory in the worktree: {run.request.cwd}."
            raise AgentFailure(failure("WORKSPACE_FAILED", message))

    async def conclude_workspace(self, run: Run) -> None:
        """After the agent, before `end`: log what changed, then apply the keep policy."""
        plan = run.workspace
        if plan is None or not run.workspace_prepared or run.terminal:
            return
        run.workspace_prepared = False  # once per run, whichever way it ends
        workspaces = self.lifecycle.workspaces
        in_use = any(
            other is not run and not other.terminal and other.workspace is not None
            and other.workspace.id == plan.id
            for other in self.lifecycle.runs.values()
        )  # fmt: skip
        with anyio.CancelScope(shield=True):  # a shutdown still says what the run changed
            try:
                info = await workspaces.summarize(plan)
                info = await workspaces.conclude(plan, info, in_use)
            except WorkspaceError as exc:
                log.warning("run %s: cannot read its worktree: %s", run.id, exc)
                return
        run.workspace_info = info
        self.lifecycle.emit(run, "changes", info.model_dump(mode="json"))

    # The end ------------------------------------------------------------------------------

    def conclude(self, run: Run, adapter: Adapter, returncode: int | None) -> None:
        """Finish the run from what happened: a broken log, a cancel, a stop, the outcome."""
        lifecycle = self.lifecycle
        killed_by = signal_name(returncode)
        exit_code = returncode if returncode is not None and returncode >= 0 else None
        if run.log_error is not None:
            signal = killed_by or run.signal_sent
            lifecycle.finish(run, "failed", exit_code, signal, run.log_error)
            return
        lifecycle.emit_many(run, adapter.finish_events())
        if run.cancel_requested:
            lifecycle.finish(run, "canceled", exit_code, killed_by or run.signal_sent)
            return
        if run.stop_error is not None:
            signal = killed_by or run.signal_sent
            lifecycle.finish(run, "failed", exit_code, signal, run.stop_error)
            return
        outcome = adapter.outcome(returncode if returncode is not None else -9)
        if not isinstance(outcome, Failed):
            lifecycle.finish(run, "succeeded", exit_code, None)
            return
        if outcome.error.code != "AGENT_EXITED":
            # The end event says "exit code N" well enough; anything subtler gets its line.
            lifecycle.emit_error(run, outcome.error)
        lifecycle.finish(run, "failed", exit_code, killed_by, outcome.error)


async def _feed_stdin(child: Child, data: bytes) -> None:
    """Write data to the child's stdin and close it; a child that does not read is fine."""
    stdin = child.process.stdin
    assert stdin is not None
    try:
        if data:
            await stdin.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    await child.close_stdin()


def _expiry_error(expiry: str, watchdog: Watchdog) -> RunError:
    if expiry == "timeout":
        return failure(
            "AGENT_TIMEOUT",
            f"The run reached its time limit of {watchdog.timeout:g} s (timeoutMs) "
            "and was stopped.",
        )
    if expiry == "quiet":
        return failure(
            "AGENT_STALLED",
            f"The agent went silent for {watchdog.post_tool:g} s after a tool call finished "
            "(postToolIdleTimeoutMs) and was stopped; its session was retired.",
        )
    return failure(
        "AGENT_STALLED",
        f"The agent printed nothing for {watchdog.idle:g} s (idleTimeoutMs) and was stopped; "
        "it may be waiting on something that never comes.",
    )


__all__ = ["RUN_ID_ENV", "Supervisor"]
