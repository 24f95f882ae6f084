"""Three real daemons on one PostgreSQL behaving as one service (issue 11).

Each test posts runs to some daemons and checks, from the others, what a user of the cluster
would: who executed a run, what a viewer anywhere sees, what happens to a run whose daemon
crashes or freezes. Children block on a FIFO (tests/cluster.py's gates) or signal.pause(), so
every wait is on an event or a poll with a deadline. The tests that do not hurt a daemon share
one cluster per module; those that kill or freeze one get a cluster of their own.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .cluster import (
    Cluster,
    SseStream,
    all_events,
    event_page,
    group_gone,
    http_error,
    loss_bound,
    make_gate,
    open_gate,
    read_sse,
    release,
    wait_output,
)
from .conftest import TERMINAL, assert_dense, poll, process_alive, read_log

# The shared cluster never loses a worker on purpose: a long lease keeps a starved daemon on a
# loaded machine from being declared lost under a test that is about something else.
SHARED_LEASE = 10.0
# A cap per daemon, so that a burst of runs has to spread over the cluster.
SHARED_MAX_RUNS = 2
# Dozens of runs through the cluster at once.
BURST = 30
BURST_DEADLINE = 90.0

# Prints `count` lines, says "waiting", blocks on the FIFO argv[2], prints `count` more lines.
STREAMER = """
import sys
count, gate = int(sys.argv[1]), sys.argv[2]
for i in range(count):
    print(f"before {i}")
print("waiting", flush=True)
with open(gate) as f:
    f.read()
for i in range(count):
    print(f"after {i}")
"""

# Says "ready", then waits to be killed.
PAUSER = "import signal\nprint('ready', flush=True)\nsignal.pause()\n"

# Says "ready", blocks on the FIFO argv[1], then prints while its daemon may be frozen.
LATE_PRINTER = """
import signal, sys
print("ready", flush=True)
with open(sys.argv[1]) as gate:
    gate.read()
for i in range(200):
    print(f"late {i}")
sys.stdout.flush()
signal.pause()
"""

# A demo run that ends at once.
FAST_DEMO = {"prompt": "tour", "demo": {"events": 4, "durationSeconds": 0}}
# clientRequestIds raced over the three daemons at once: enough that some posts collide.
RACING_KEYS = 8

# sh children: cheaper than Python, and the run id comes from the env every child inherits.
RECORD_ID = 'echo "$OD_RUNS_RUN_ID" >> "$1"'
RECORD_ID_THEN_WAIT = 'echo "$OD_RUNS_RUN_ID" >> "$1"; cat "$2" > /dev/null'
RECORD_ID_THEN_PAUSE = (
    'echo "$OD_RUNS_RUN_ID" >> "$1"; exec "$2" -c "import signal; signal.pause()"'
)
MARK_START_AND_END = (
    'echo "start $OD_RUNS_RUN_ID" >> "$1"; cat "$2" > /dev/null; echo "end $OD_RUNS_RUN_ID" >> "$1"'
)


def unique(prefix: str) -> str:
    """An id no other test of the shared cluster uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def python_run(tmp_path: Path, script: str, *args: str, **fields: Any) -> dict[str, Any]:
    """The body of a `command` run of a Python script written to tmp_path."""
    path = tmp_path / f"child-{uuid.uuid4().hex[:6]}.py"
    path.write_text(script)
    return {"agentId": "command", "command": [sys.executable, str(path), *args], **fields}


def sh_run(script: str, *args: str, **fields: Any) -> dict[str, Any]:
    """The body of a `command` run of an sh script, with $1.. set to args."""
    return {"agentId": "command", "command": ["sh", "-c", script, "sh", *args], **fields}


def pauser(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    """A run whose child says "ready" and waits to be killed."""
    return python_run(tmp_path, PAUSER, **fields)


def printed(frames: list[dict[str, str]], text: str) -> bool:
    """True if one of the SSE frames is a stdout event of this text."""
    for frame in frames:
        if frame["event"] == "stdout" and json.loads(frame["data"])["data"].get("text") == text:
            return True
    return False


def ids_of(frames: list[dict[str, str]]) -> list[int]:
    """The ids of SSE frames, as numbers."""
    return [int(f["id"]) for f in frames]


def active_runs(cluster: Cluster, via: str, **filters: str) -> list[dict[str, Any]]:
    """The runs not yet terminal, as one daemon lists them (from the shared database)."""
    with cluster[via].client() as http:
        response = http.get("/api/runs", params={"status": "active", "limit": "1000", **filters})
    assert response.status_code == 200, response.text
    return response.json()["runs"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_server: Any) -> Iterator[Cluster]:
    """Three daemons on one fresh database, shared by the tests that hurt none of them."""
    root = tmp_path_factory.mktemp("cluster")
    shared = Cluster(
        root, pg_server.new_database(), lease_seconds=SHARED_LEASE, max_runs=SHARED_MAX_RUNS
    )
    with shared:
        yield shared


@pytest.fixture
def fresh(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    """Three daemons of a test's own, with a 2 s lease and one run at a time each."""
    with Cluster(tmp_path / "cluster", pg_url, max_runs=1) as own:
        yield own


# Watching and resuming anywhere -----------------------------------------------------------


def test_a_run_started_on_one_daemon_streams_live_to_the_other_two(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Invariants 3 and 5 across daemons: viewers on the two daemons that do not execute a run,
    attached from after=0 while it streams, each get exactly the executor's events.jsonl
    (same ids, same lines, in order), ending in `end`."""
    gate = make_gate(tmp_path / "gate")
    run = cluster.create("w1", python_run(tmp_path, STREAMER, "150", str(gate)))
    executor = cluster.executor(run["id"], "w1")
    viewers = cluster.others(executor)
    with (
        SseStream(cluster[viewers[0]], run["id"], after=0) as first,
        SseStream(cluster[viewers[1]], run["id"], after=0) as second,
    ):
        for stream in (first, second):
            stream.read_until(lambda frames: printed(frames, "waiting"))
        # Both are attached and the run is half done: the rest reaches them live.
        assert cluster.status(run["id"], executor)["status"] == "running"
        release(gate)
        seen = [first.read_to_end(), second.read_to_end()]
    final = cluster.wait_terminal(run["id"], viewers[1])
    assert final["status"] == "succeeded"
    assert final["workerId"] == executor
    log_path = Path(final["eventsLogPath"])
    assert log_path.is_relative_to(cluster[executor].data_dir)
    # The log lives on the executor's host, as /api/health names that host.
    assert final["eventsLogHost"] == cluster.workers_seen(viewers[0])[executor]["host"]
    log = read_log(log_path)
    assert_dense(log)
    lines = log_path.read_text().splitlines()
    assert len(log) > 300
    for frames in seen:
        assert ids_of(frames) == [e["id"] for e in log]
        assert [f["event"] for f in frames] == [e["event"] for e in log]
        assert [f["data"] for f in frames] == lines


def test_a_viewer_resumes_on_another_daemon_without_gap_or_duplicate(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Invariant 5 across daemons: part of a live run's SSE read on its executor, the rest on
    another daemon with Last-Event-ID, gives the whole log once; so do JSON pages with after=
    on the third."""
    gate = make_gate(tmp_path / "gate")
    run = cluster.create("w2", python_run(tmp_path, STREAMER, "100", str(gate)))
    executor = cluster.executor(run["id"], "w2")
    other, third = cluster.others(executor)
    with SseStream(cluster[executor], run["id"]) as early:
        # A client that took in 40 frames and hung up (one chunk may have brought more).
        first = early.read_until(lambda frames: len(frames) >= 40)[:40]
    cursor = int(first[-1]["id"])
    # JSON pages on the third daemon while the run waits on the gate: they end at the head.
    wait_output(cluster[third], run["id"], "waiting")
    live_page = event_page(cluster[third], run["id"], cursor, limit=1000)
    assert not live_page["hasMore"]
    assert [e["id"] for e in live_page["items"]] == list(
        range(cursor + 1, live_page["nextCursor"] + 1)
    )
    with SseStream(cluster[other], run["id"], headers={"Last-Event-ID": str(cursor)}) as late:
        late.read_until(lambda frames: printed(frames, "waiting"))
        release(gate)
        late.read_to_end()
    final = cluster.wait_terminal(run["id"], third)
    log = read_log(final["eventsLogPath"])
    assert_dense(log)
    received = ids_of(first) + ids_of(late.frames)
    assert received == [e["id"] for e in log]
    # Pages of 25 from the same cursor on the third daemon, after the end.
    paged: list[dict[str, Any]] = []
    after = cursor
    while True:
        page = event_page(cluster[third], run["id"], after, limit=25)
        assert len(page["items"]) <= 25
        paged += page["items"]
        after = page["nextCursor"]
        if not page["hasMore"]:
            break
    assert ids_of(first) + [e["id"] for e in paged] == [e["id"] for e in log]
    assert paged == log[cursor:]


# Placement --------------------------------------------------------------------------------


def test_dozens_of_runs_posted_round_robin_each_execute_exactly_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Invariant 11: 30 runs posted to the three daemons in turn each run exactly once (their
    children record their run id once), all succeed, and a daemon runs at most --max-runs at
    once, so they spread over more than one worker."""
    ran, gate = tmp_path / "ran.txt", make_gate(tmp_path / "gate")
    body = sh_run(RECORD_ID_THEN_WAIT, str(ran), str(gate), projectId=unique("burst"))
    ids = [cluster.create(cluster.ids[i % 3], body)["id"] for i in range(BURST)]
    wanted = set(ids)
    most_at_once: Counter[str] = Counter()

    def all_ended() -> bool:
        # Children wait on the gate until all runs are posted, so runs pile up and every
        # daemon's cap is reached; each look lets the waiting ones finish.
        running = [r for r in active_runs(cluster, "w3") if r["id"] in wanted]
        per_worker = Counter(r["workerId"] for r in running if r["status"] == "running")
        for worker, count in per_worker.items():
            most_at_once[worker] = max(most_at_once[worker], count)
        open_gate(gate)
        return not running

    poll("every run of the burst to end", all_ended, BURST_DEADLINE)
    bodies = [cluster.status(run_id, cluster.ids[i % 3]) for i, run_id in enumerate(ids)]
    assert [b["status"] for b in bodies] == ["succeeded"] * BURST
    workers = Counter(b["workerId"] for b in bodies)
    assert set(workers) <= set(cluster.ids), workers
    assert len(workers) > 1, workers
    assert all(count <= SHARED_MAX_RUNS for count in most_at_once.values()), most_at_once
    recorded = Counter(ran.read_text().split())
    assert recorded == Counter(ids)  # each id once: nothing ran twice, nothing was skipped


def test_runs_of_one_conversation_never_overlap_across_daemons(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Invariant 12: runs of one conversation posted to different daemons execute one at a
    time, anywhere in the cluster, in the order they were created."""
    marks, gate = tmp_path / "marks.txt", make_gate(tmp_path / "gate")
    conversation = unique("conv")
    body = sh_run(MARK_START_AND_END, str(marks), str(gate), conversationId=conversation)
    ids = [cluster.create(cluster.ids[i % 3], body)["id"] for i in range(5)]

    def all_ended() -> bool:
        active = active_runs(cluster, "w2", conversationId=conversation)
        running = [r["id"] for r in active if r["status"] == "running"]
        assert len(running) <= 1, f"runs of one conversation overlap: {running}"
        open_gate(gate)
        return not active

    poll("the conversation's runs to end", all_ended)
    assert [cluster.status(i, "w1")["status"] for i in ids] == ["succeeded"] * len(ids)
    expected = [f"{mark} {run_id}" for run_id in ids for mark in ("start", "end")]
    assert marks.read_text().splitlines() == expected


def test_a_client_request_id_names_one_run_on_every_daemon(cluster: Cluster) -> None:
    """The same clientRequestId and payload on two daemons give one run; another payload is a
    409 IDEMPOTENCY_CONFLICT on the third."""
    project = unique("idem")
    key = unique("req")
    body = {**FAST_DEMO, "projectId": project, "clientRequestId": key}
    first = cluster.create("w1", body)
    second = cluster.create("w2", body)
    assert second["id"] == first["id"]
    with cluster["w3"].client() as http:
        conflict = http.post("/api/runs", json={**body, "prompt": "something else"})
        assert key in http_error(conflict, 409, "IDEMPOTENCY_CONFLICT")
        listed = http.get("/api/runs", params={"projectId": project}).json()["runs"]
    assert [r["id"] for r in listed] == [first["id"]]
    assert cluster.wait_terminal(first["id"], "w3")["status"] == "succeeded"
    assert cluster.create("w3", body)["id"] == first["id"]  # and after its end too


def test_daemons_receiving_one_client_request_id_at_once_agree_on_one_run(
    cluster: Cluster,
) -> None:
    """Idempotency under a race: each of several clientRequestIds posted to all three daemons
    at the same moment (a client retrying on another daemon) gives every caller one run."""
    project = unique("race")
    keys = [unique("req") for _ in range(RACING_KEYS)]
    posts = [(worker, key) for key in keys for worker in cluster.ids]
    barrier = threading.Barrier(len(posts))

    def post(worker_key: tuple[str, str]) -> tuple[str, int, Any]:
        worker, key = worker_key
        body = {**FAST_DEMO, "projectId": project, "clientRequestId": key}
        with cluster[worker].client() as http:
            barrier.wait(timeout=30)
            response = http.post("/api/runs", json=body)
        return key, response.status_code, response.json() if response.status_code == 202 else None

    with ThreadPoolExecutor(len(posts)) as pool:
        answers = list(pool.map(post, posts))
    assert [code for _, code, _ in answers] == [202] * len(posts), answers
    by_key = {key: {b["id"] for k, _, b in answers if k == key} for key in keys}
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    with cluster["w1"].client() as http:
        listed = http.get("/api/runs", params={"projectId": project, "limit": 1000}).json()
    assert len(listed["runs"]) == RACING_KEYS


# Cancel anywhere --------------------------------------------------------------------------


def test_cancel_through_a_daemon_that_does_not_execute_the_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Invariant 9 across daemons: cancel sent to a daemon other than the executor answers
    with the run `canceled` once the child's process group is gone."""
    run = cluster.create("w1", pauser(tmp_path))
    executor = cluster.executor(run["id"], "w1")
    elsewhere = cluster.others(executor)[0]
    wait_output(cluster[elsewhere], run["id"], "ready")
    pid = cluster.child_pid(run["id"], elsewhere)
    assert process_alive(pid)
    with cluster[elsewhere].client() as http:
        response = http.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["run"]["status"] == "canceled"
    assert group_gone(pid)
    for worker in cluster.ids:
        assert cluster.status(run["id"], worker)["status"] == "canceled"
    events = all_events(cluster[executor], run["id"])
    assert_dense(events)


def test_cancel_of_a_queued_run_through_any_daemon_means_it_never_runs(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A run queued behind its conversation, canceled through a daemon that does not execute
    the conversation, ends `canceled` at once and never starts, while the next one does."""
    conversation = unique("conv")
    ran = tmp_path / "ran.txt"
    blocker = cluster.create("w1", pauser(tmp_path, conversationId=conversation))
    executor = cluster.executor(blocker["id"], "w1")
    elsewhere = cluster.others(executor)[0]
    wait_output(cluster[elsewhere], blocker["id"], "ready")
    queued = cluster.create(elsewhere, sh_run(RECORD_ID, str(ran), conversationId=conversation))
    assert cluster.status(queued["id"], executor)["status"] == "queued"
    with cluster[elsewhere].client() as http:
        response = http.post(f"/api/runs/{queued['id']}/cancel")
    assert response.status_code == 200, response.text
    canceled = response.json()["run"]
    assert canceled["status"] == "canceled"
    assert canceled["childPid"] is None and canceled["startedAt"] is None
    with cluster[elsewhere].client() as http:
        assert http.post(f"/api/runs/{blocker['id']}/cancel").json()["run"]["status"] == "canceled"
    after = cluster.create(executor, sh_run(RECORD_ID, str(ran), conversationId=conversation))
    assert cluster.wait_terminal(after["id"], elsewhere)["status"] == "succeeded"
    # The canceled run would have gone before it: only the later one ever ran.
    assert ran.read_text().split() == [after["id"]]
    assert cluster.status(queued["id"], executor)["status"] == "canceled"


def test_a_run_s_child_is_recorded_before_its_first_event(cluster: Cluster, tmp_path: Path) -> None:
    """Invariants 9 and 12: the database holds a run's child (status running, its pid) before
    any event of the run, so a daemon that dies once its child runs leaves the pid its restart
    reaps, and no daemon shows a run `queued` while serving its output."""
    run = cluster.create("w1", pauser(tmp_path))
    try:
        with psycopg.connect(cluster.database_url, autocommit=True) as conn:

            def first_event() -> tuple[str, int | None, int] | None:
                # One statement, one snapshot: the row and the events as of the same moment.
                row = conn.execute(
                    "SELECT r.status, r.child_pid,"
                    " (SELECT max(e.id) FROM events e WHERE e.run_id = r.id)"
                    " FROM runs r WHERE r.id = %s",
                    (run["id"],),
                ).fetchone()
                return row if row is not None and row[2] is not None else None

            status, pid, head = poll("the run's first event in the database", first_event)
        assert (status, pid is not None) == ("running", True), (status, pid, head)
    finally:
        with cluster["w2"].client() as http:
            http.post(f"/api/runs/{run['id']}/cancel")


# Seeing the cluster -----------------------------------------------------------------------


def test_every_daemon_lists_all_three_workers_alive(cluster: Cluster) -> None:
    """/api/health on each daemon names itself and lists w1, w2 and w3 alive, with a host."""
    for worker in cluster.ids:
        health = cluster.health(worker)
        assert health["workerId"] == worker
        seen = {w["id"]: w for w in health["workers"]}
        assert set(seen) == set(cluster.ids)
        assert all(w["alive"] and w["host"] and w["heartbeat"] for w in seen.values()), seen


# Faults: each test gets a cluster of its own -------------------------------------------------


@pytest.mark.slow
def test_a_crashed_worker_shows_dead_on_the_others_after_its_lease(fresh: Cluster) -> None:
    """After kill -9 of a daemon, the others' /api/health show it alive false within the
    lease and one heartbeat, and themselves still alive."""
    fresh.kill("w3")
    for worker in ("w1", "w2"):
        seen = fresh.wait_workers(
            worker, alive={"w1", "w2"}, dead={"w3"}, deadline=loss_bound(fresh.lease)
        )
        assert set(seen) == set(fresh.ids)


@pytest.mark.slow
def test_a_crashed_executor_s_run_is_concluded_elsewhere_and_reaped_when_it_returns(
    fresh: Cluster, tmp_path: Path
) -> None:
    """Invariant 12: kill -9 of the daemon executing a run; another daemon ends it `failed` /
    WORKER_LOST with an `end` event within the lease and a heartbeat (plus slack for a loaded
    machine); the run queued behind it
    executes on a surviving daemon; the child lives on until its daemon restarts with the same
    worker id and data dir, which kills it (invariant 9) and resurrects nothing."""
    conversation = unique("conv")
    ran = tmp_path / "ran.txt"
    run = fresh.create("w1", pauser(tmp_path, conversationId=conversation))
    executor = fresh.executor(run["id"], "w1")
    survivors = fresh.others(executor)
    wait_output(fresh[survivors[0]], run["id"], "ready")
    # Stored running with its pid (test_a_run_s_child_is_recorded_before_its_first_event
    # covers the window before that).
    pid = fresh.child_pid(run["id"], survivors[0])
    # Waits for its conversation; its executor's cap (--max-runs 1) is taken by the first run.
    queued = fresh.create(executor, sh_run(RECORD_ID, str(ran), conversationId=conversation))
    assert fresh.status(queued["id"], survivors[1])["status"] == "queued"

    fresh.kill(executor)
    lost = fresh.wait_status(
        run["id"],
        survivors[0],
        lambda body: body["status"] in TERMINAL,
        "to be concluded",
        loss_bound(fresh.lease),
    )
    assert (lost["status"], lost["errorCode"]) == ("failed", "WORKER_LOST"), lost
    for worker in survivors:
        events = all_events(fresh[worker], run["id"])
        assert_dense(events)
        assert (events[-1]["data"]["status"], events[-1]["data"].get("errorCode")) == (
            "failed",
            "WORKER_LOST",
        )
        assert [e["event"] for e in read_sse(fresh[worker], run["id"])][-1] == "end"
    # Its host's processes are its own: nobody else may touch them.
    assert process_alive(pid)

    done = fresh.wait_terminal(queued["id"], survivors[1])
    assert done["status"] == "succeeded"
    assert done["workerId"] in survivors
    assert ran.read_text().split() == [queued["id"]]

    fresh.restart(executor)
    poll("the restarted daemon to kill its orphaned child", lambda: group_gone(pid))
    again = fresh.status(run["id"], executor)
    assert (again["status"], again["errorCode"]) == ("failed", "WORKER_LOST")
    assert again["lastEventId"] == lost["lastEventId"]
    assert all_events(fresh[executor], run["id"]) == all_events(fresh[survivors[0]], run["id"])
    assert fresh.status(queued["id"], executor)["status"] == "succeeded"


@dataclass
class Woken:
    """A run whose executor was frozen past its lease, concluded elsewhere, then woken."""

    cluster: Cluster
    run_id: str
    executor: str
    pid: int
    # The run's events as another daemon served them once it had concluded the run.
    concluded: list[dict[str, Any]]


@pytest.fixture(scope="module")
def woken(tmp_path_factory: pytest.TempPathFactory, pg_server: Any) -> Iterator[Woken]:
    """Invariant 11's scenario, played once for the tests that look at its outcome: SIGSTOP
    the executor longer than its lease while its child prints; another daemon concludes the
    run WORKER_LOST; SIGCONT; the woken daemon stops the child (polled until it is gone)."""
    root = tmp_path_factory.mktemp("frozen")
    with Cluster(root / "cluster", pg_server.new_database(), max_runs=1) as own:
        gate = make_gate(root / "gate")
        run = own.create("w1", python_run(root, LATE_PRINTER, str(gate)))
        executor = own.executor(run["id"], "w1")
        watcher = own.others(executor)[0]
        wait_output(own[watcher], run["id"], "ready")
        pid = own.child_pid(run["id"], watcher)

        own.pause(executor)
        release(gate)  # the child prints into the pipe of a daemon that cannot read it
        lost = own.wait_status(
            run["id"],
            watcher,
            lambda body: body["status"] in TERMINAL,
            "to be concluded",
            loss_bound(own.lease),
        )
        assert (lost["status"], lost["errorCode"]) == ("failed", "WORKER_LOST"), lost
        concluded = all_events(own[watcher], run["id"])
        assert_dense(concluded)
        assert process_alive(pid)  # the frozen daemon's child: nobody else may stop it

        own.resume(executor)
        poll("the woken daemon to stop the child", lambda: group_gone(pid), loss_bound(own.lease))
        yield Woken(own, run["id"], executor, pid, concluded)


def served_by(woken: Woken, worker: str) -> tuple[Any, ...]:
    """What one daemon serves of the run once it says the run ended: JSON pages, SSE frames
    (id, event) and its status body's (status, errorCode, lastEventId)."""
    cluster, run_id = woken.cluster, woken.run_id
    body = cluster.wait_terminal(run_id, worker, loss_bound(cluster.lease))
    return (
        all_events(cluster[worker], run_id),
        [(int(f["id"]), f["event"]) for f in read_sse(cluster[worker], run_id)],
        (body["status"], body["errorCode"], body["lastEventId"]),
    )


def concluded_view(woken: Woken) -> tuple[Any, ...]:
    """served_by() as it must be on every daemon: the concluding daemon's record."""
    events = woken.concluded
    return (
        events,
        [(e["id"], e["event"]) for e in events],
        ("failed", "WORKER_LOST", events[-1]["id"]),
    )


@pytest.mark.slow
def test_a_frozen_executor_that_wakes_cannot_write_into_the_concluded_run(woken: Woken) -> None:
    """Invariant 11: once another daemon concluded the run of a frozen executor, the woken
    executor's writes (the lines its child printed meanwhile, its own ending) are refused:
    the database (the JSON page on every daemon) and the daemons that did not execute it show
    exactly the concluded events, one `end`, failed / WORKER_LOST, and the child is stopped."""
    cluster = woken.cluster
    assert group_gone(woken.pid)
    events = woken.concluded
    assert [e["event"] for e in events].count("end") == 1
    assert events[-1]["data"]["errorCode"] == "WORKER_LOST"
    assert not any(
        isinstance(e["data"], dict) and str(e["data"].get("text", "")).startswith("late")
        for e in events
    )
    for worker in cluster.ids:
        assert all_events(cluster[worker], woken.run_id) == events, worker
    for worker in cluster.others(woken.executor):
        assert served_by(woken, worker) == concluded_view(woken), worker
    with psycopg.connect(cluster.database_url) as conn:
        stored = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE event = 'end') FROM events WHERE run_id = %s",
            (woken.run_id,),
        ).fetchone()
    assert stored == (len(events), 1)


@pytest.mark.slow
def test_the_woken_executor_serves_the_concluded_run_as_stored(woken: Woken) -> None:
    """Invariants 5 and 11: the daemon whose lease moved on serves the run exactly as the
    others do (the concluding daemon's events and status), not an ending of its own."""
    assert served_by(woken, woken.executor) == concluded_view(woken)


@pytest.mark.slow
def test_an_executor_killed_as_its_run_starts_leaves_it_executed_once(
    fresh: Cluster, tmp_path: Path
) -> None:
    """Invariants 11 and 12: kill -9 of the executor as soon as its run's first event is in
    the database; the run ends `failed` / WORKER_LOST and no other daemon executes it again."""
    ran = tmp_path / "ran.txt"
    # A conversation's run goes through the queue: claimed, then started.
    body = sh_run(RECORD_ID_THEN_PAUSE, str(ran), sys.executable, conversationId=unique("c"))
    run = fresh.create("w1", body)
    executor = fresh.executor(run["id"], "w1")
    with psycopg.connect(fresh.database_url, autocommit=True) as conn:
        poll(
            "the run's first event in the database",
            lambda: conn.execute("SELECT 1 FROM events WHERE run_id = %s", (run["id"],)).fetchone(),
        )
    fresh.kill(executor)
    survivor = fresh.others(executor)[0]
    lost = fresh.wait_terminal(run["id"], survivor, loss_bound(fresh.lease))
    assert (lost["status"], lost["errorCode"]) == ("failed", "WORKER_LOST"), lost
    assert lost["workerId"] == executor
    poll("the child to record its run id", ran.exists)
    assert ran.read_text().split() == [run["id"]]
