"""A conversation's live `codex-app-server` session in a cluster of daemons (issue 11, item 7).

The session's process lives on the daemon that spawned it, so the conversation's runs go there
while that daemon lives, wherever they are posted. Once that daemon is gone, the next run resumes
the stored thread in a new process on another daemon: the same thread, never a silent new one.
Real pinned Codex, scripted Responses server, two real daemons on one throwaway PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from od_runs.agents.codex import BINARY_ENV

from .codex_helpers import APP_SERVER, CODEX, Codex, scripted_codex
from .conftest import Daemon, poll, process_alive, wait_terminal
from .fakes.responses_server import Message

pytestmark = [pytest.mark.needs_cli("codex")]

LEASE = 2.0


@pytest.fixture
def codex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Codex]:
    monkeypatch.setenv(BINARY_ENV, str(CODEX))
    with scripted_codex(tmp_path, APP_SERVER) as made:
        yield made


def cluster_daemon(tmp_path: Path, pg_url: str, worker: str) -> Daemon:
    """A daemon (not started) of the cluster on pg_url, spawning the pinned Codex."""
    data_dir = tmp_path / f"data-{worker}"
    data_dir.mkdir(exist_ok=True)
    daemon = Daemon(
        data_dir,
        None,
        "--database-url",
        pg_url,
        "--worker-id",
        worker,
        "--lease-seconds",
        str(LEASE),
    )
    daemon.env[BINARY_ENV] = str(CODEX)
    return daemon


def session_on(daemon: Daemon) -> dict[str, Any]:
    """conv-1's one session as daemon serves it, with its recent events."""
    with daemon.client() as http:
        (summary,) = http.get("/api/sessions", params={"conversationId": "conv-1"}).json()[
            "sessions"
        ]
        return http.get(f"/api/sessions/{summary['id']}").json()  # type: ignore[no-any-return]


def worker_alive(daemon: Daemon, worker: str) -> bool | None:
    """What daemon's /api/health says of worker's liveness (None if it does not list it)."""
    with daemon.client() as http:
        workers = http.get("/api/health").json()["workers"]
    return next((w["alive"] for w in workers if w["id"] == worker), None)


@pytest.mark.slow
def test_a_conversation_follows_its_live_session_and_resumes_its_thread_when_that_daemon_dies(
    codex: Codex, tmp_path: Path, pg_url: str
) -> None:
    """Issue 11 item 7 (invariant 12: worker loss is concluded): runs of a conversation go to
    the daemon holding its live session, whichever daemon they are posted to; after a kill -9
    of that daemon the session is retired and the next run, on the other daemon, resumes the
    same thread with the earlier turns; the restarted daemon leaves no orphan process."""
    codex.server.script([Message("One.")], [Message("Two.")], [Message("Three.")])
    body = codex.request("first").model_dump(mode="json", exclude_unset=True)
    a = cluster_daemon(tmp_path, pg_url, "wA")
    b = cluster_daemon(tmp_path, pg_url, "wB")
    # B joins once A holds the session, so that run 1 has only A to go to.
    a.start()
    try:
        first = wait_terminal(a, a.create(body)["id"])
        b.start()
        second = wait_terminal(b, b.create({**body, "prompt": "second"})["id"])
        on_a = session_on(b)
        a.kill()  # a crash, with the session's process idle
        lost = poll(
            "B to conclude that A is lost and retire its session",
            lambda: (s := session_on(b))["status"] == "retired" and s,
            deadline=30,
        )
        a_alive_after_loss = worker_alive(b, "wA")
        third = wait_terminal(b, b.create({**body, "prompt": "third"})["id"])
        on_b = session_on(b)
        seen = str(codex.server.requests[-1]["input"])
        # A comes back as itself: nothing of its old session process is left, and it takes
        # nothing back from B.
        a.start()
        poll(
            "A's old app-server to be gone",
            lambda: not process_alive(first["childPid"]),
            deadline=10,
        )
        after_restart = session_on(a)
        b_process_lives = process_alive(third["childPid"])
    finally:
        for daemon in (a, b):
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
    assert [r["status"] for r in (first, second, third)] == ["succeeded"] * 3
    assert [r["workerId"] for r in (first, second, third)] == ["wA", "wA", "wB"]
    thread = first["sessionRef"]["threadId"]
    assert {r["sessionRef"]["threadId"] for r in (first, second, third)} == {thread}
    # Run 2 was a turn on A's live process: same pid, no second spawn.
    assert second["childPid"] == first["childPid"] == on_a["pid"]
    assert (on_a["status"], on_a["lastRunId"]) == ("idle", second["id"])
    assert [e["type"] for e in on_a["recentEvents"]].count("spawned") == 1
    # What a user of B sees once A is gone: A is dead, its session retired, no process.
    assert a_alive_after_loss is False
    assert (lost["status"], lost["pid"], lost["retiredReason"]) == ("retired", None, "worker lost")
    assert lost["threadId"] == thread
    # Run 3 resumed the thread on B in a new process, with the earlier turns in the model input.
    assert third["childPid"] not in (None, first["childPid"])
    assert (on_b["status"], on_b["pid"], on_b["threadId"]) == ("idle", third["childPid"], thread)
    kinds = [e["type"] for e in on_b["recentEvents"]]
    assert kinds.count("thread.started") == 1 and kinds[-4:] == [
        "spawned",
        "thread.resumed",
        "turn.started",
        "turn.ended",
    ]
    assert all(text in seen for text in ("first", "One.", "second", "Two.", "third"))
    # A's restart killed nothing of B's: the session still lives there.
    assert (after_restart["status"], after_restart["pid"]) == ("idle", third["childPid"])
    assert b_process_lives
