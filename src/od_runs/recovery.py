"""Start-up recovery: close out runs a crash left active, and kill what they left running."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
from pathlib import Path

import anyio

from .agents.process import kill_recorded_group, processes_marked
from .encoding import now_iso
from .eventlog import EventLog, LogLine, encode_lines, ensure_private_dir, recover_tail
from .models import RunStatus
from .retention import DeleteJournal, sweep_leftovers
from .storage import EventStore, RunStore
from .store import RunRow

log = logging.getLogger("od_runs.recovery")

RESTART_CODE = "DAEMON_RESTARTED"
RESTART_MESSAGE = (
    "The od-runs daemon stopped while this run was active; its processes were stopped. "
    "Start the run again."
)


LOCK_NAME = "od-runs.lock"


class DataDirInUse(RuntimeError):
    """Another live daemon owns this data dir: recovering it would kill that daemon's runs."""


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir private to its owner."""
    ensure_private_dir(data_dir)


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir's exclusive lock (held while the fd is open); fail if it is taken."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(
            f"another od-runs daemon is using the data dir {data_dir}; stop it first"
        ) from None
    return fd


def kill_leftovers(row: RunRow, env_name: str) -> None:
    """Kill what a run's recorded process group and marked processes left behind."""
    pid = row.body.childPid
    if pid is not None and kill_recorded_group(pid, row.child_start_time):
        log.warning("run %s: killed process group %d left by a crash", row.body.id, pid)
    # Children that changed their group (or whose pid we never recorded) still carry the marker.
    for orphan in processes_marked(f"{env_name}={row.body.id}"):
        try:
            os.kill(orphan, signal.SIGKILL)
            log.warning("run %s: killed leftover process %d", row.body.id, orphan)
        except (ProcessLookupError, PermissionError):
            pass


def as_logged(body: RunStatus, last: LogLine | None, now: str) -> RunStatus | None:
    """The body a run's logged `end` says it finished with, or None if it has no end."""
    if last is None or last.event != "end":
        return None
    line = json.loads(last.line)
    end = line["data"]
    return body.model_copy(
        update={
            "updatedAt": now,
            "status": end.get("status", "failed"),
            "exitCode": end.get("code"),
            "signal": end.get("signal"),
            "errorCode": end.get("errorCode"),
            "error": end.get("error"),
            "lastEventId": last.id,
            "finishedAt": line["ts"],
        }
    )


def restart_lines(
    first: int, now: str, code: str = RESTART_CODE, message: str = RESTART_MESSAGE
) -> tuple[bytes, list[LogLine], list[int]]:
    """The `error` and `end` lines that close a run the daemon stopped during, from id first
    (or, with another code, a run whose daemon was lost: pg_cluster.py)."""
    error = {"code": code, "message": message, "retryable": True}
    end = {"status": "failed", "code": None, "signal": None}
    items = [
        ("error", {"message": message, "error": error}),
        ("end", {**end, "errorCode": code, "error": message}),
    ]
    return encode_lines(first, items, now, lambda s: s)


def failed_by_restart(
    body: RunStatus,
    now: str,
    last_id: int | None,
    code: str = RESTART_CODE,
    message: str = RESTART_MESSAGE,
) -> RunStatus:
    """The body of a run closed as DAEMON_RESTARTED (its log ends at last_id, if it has one)."""
    update: dict[str, object] = {
        "updatedAt": now,
        "status": "failed",
        "errorCode": code,
        "error": message,
        "retryable": True,
        "finishedAt": now,
    }
    if last_id is not None:
        update["lastEventId"] = last_id
    return body.model_copy(update=update)


def _close_log(body: RunStatus, now: str) -> RunStatus:
    """Finish the log with an end line unless the run had written one; return the new body."""
    if body.eventsLogPath is None:
        return failed_by_restart(body, now, None)
    path = Path(body.eventsLogPath)
    last = recover_tail(path)
    logged = as_logged(body, last, now)
    if logged is not None:
        return logged
    first = (last.id if last is not None else 0) + 1
    raw, _, lengths = restart_lines(first, now)
    writer = EventLog.create(path.parent)
    try:
        writer.append(first, raw, lengths)
    finally:
        writer.close()
    return failed_by_restart(body, now, first + 1)


async def recover(store: RunStore, env_name: str) -> int:
    """Mark runs left queued/running as failed, close their logs, reap their processes."""
    rows = await store.unfinished()
    for row in rows:
        await anyio.to_thread.run_sync(kill_leftovers, row, env_name)
        row.body = await anyio.to_thread.run_sync(_close_log, row.body, now_iso())
        await store.insert(row)
    return len(rows)


async def finish_deletes(store: RunStore, events: EventStore, data_dir: Path) -> int:
    """Complete every delete a crash interrupted: its row, then its events, then its intent.

    A delete writes its intent before it touches anything (retention.py), so whichever half
    a crash left undone is done here, before the daemon serves anyone.
    """
    journal = DeleteJournal(data_dir)
    pending = await anyio.to_thread.run_sync(journal.pending)
    for run_id in pending:
        row = await store.get(run_id)
        location = row.body.eventsLogPath if row is not None else None
        await store.delete(run_id)
        await anyio.to_thread.run_sync(events.delete, run_id, location)
        await anyio.to_thread.run_sync(journal.drop, run_id)
        log.warning("run %s: finished a delete a crash had interrupted", run_id)
    await anyio.to_thread.run_sync(sweep_leftovers, data_dir)
    return len(pending)
