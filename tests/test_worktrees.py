"""Worktree runs (issue 12): a git worktree per run or conversation, what changed, cleanup.

Real git in tmp_path, the real daemon (or RunService), `command` agents that edit files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from od_runs.errors import Invalid
from od_runs.models import RunCreate, WorkspaceSpec
from od_runs.runs import open_service

from .conftest import Daemon, call, connect, http_client, poll, read_log, wait_terminal


def git(*args: str, cwd: Path | str) -> str:
    """Run git in cwd and return its stdout; a failure fails the test."""
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def make_repo(path: Path) -> Path:
    """A repository with one commit of two files, as a user's checkout would be."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    git("config", "user.email", "user@example.com", cwd=path)
    git("config", "user.name", "User", cwd=path)
    (path / "a.txt").write_text("one\ntwo\nthree\n")
    (path / "sub").mkdir()
    (path / "sub" / "b.txt").write_text("bee\n")
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "first", cwd=path)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def checkout_state(repo: Path) -> tuple[str, str, str]:
    """What the user sees of their checkout: status, HEAD, and the index's bytes."""
    index = hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest()
    return git("status", "--porcelain", cwd=repo), git("rev-parse", "HEAD", cwd=repo), index


def command_run(repo: Path, script: str, *, keep: str = "changed", **fields: Any) -> dict[str, Any]:
    """A run body: `sh -c script` in a worktree of repo."""
    return {
        "agentId": "command",
        "command": ["sh", "-c", script],
        "workspace": {"mode": "worktree", "repo": str(repo), "keep": keep},
        **fields,
    }


def finished(daemon: Daemon, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """Start a run, wait for its end; its status body and logged events."""
    run = daemon.create(body)
    status = wait_terminal(daemon, run["id"])
    return status, read_log(status["eventsLogPath"])


def changes_of(events: list[dict]) -> dict[str, Any]:
    """The data of the one `changes` event, which must come right before `end`."""
    names = [e["event"] for e in events]
    assert names.count("changes") == 1 and names[-2:] == ["changes", "end"], names
    return events[-2]["data"]  # type: ignore[no-any-return]


def stdout_of(events: list[dict]) -> str:
    return "\n".join(json.dumps(e["data"]) for e in events if e["event"] == "stdout")


def od(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "od_runs", "--url", daemon.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# Two runs at once ------------------------------------------------------------------------

# Each run writes its own edits, says so, then blocks on its own FIFO until the test has
# seen both runs write (so they really overlap); then it lists what it sees.
RACER = (
    "echo {name} >> a.txt; echo {name} > {name}.txt; touch {sync}/{name}.ready; "
    "read _ < {sync}/{name}.go; ls; cat a.txt"
)


def release(fifo: Path) -> None:
    """Let a child blocked on `read _ < fifo` go on (opening blocks until it reads)."""
    with fifo.open("w") as gate:
        gate.write("go\n")


def test_two_concurrent_runs_on_one_repo_see_only_their_own_edits(
    shared: Daemon, repo: Path, tmp_path: Path
) -> None:
    """Invariant 13: two worktree runs on one repo each change only their own worktree; the
    user's checkout (status, HEAD, index) is exactly as it was, and `git worktree list` and
    the `changes` events and diffs say what each run did."""
    before = checkout_state(repo)
    base = git("rev-parse", "HEAD", cwd=repo).strip()
    sync = tmp_path / "sync"
    sync.mkdir()
    for name in ("left", "right"):
        os.mkfifo(sync / f"{name}.go")
    runs = {
        name: shared.create(
            command_run(repo, RACER.format(name=name, other=other, sync=sync), keep="always")
        )
        for name, other in (("left", "right"), ("right", "left"))
    }
    poll("both runs wrote", lambda: all((sync / f"{n}.ready").exists() for n in runs))
    listed = git("worktree", "list", "--porcelain", cwd=repo)
    for run in runs.values():
        workspace = run["workspace"]
        assert workspace["path"] in listed and f"refs/heads/od-runs/{run['id']}" in listed
        assert Path(workspace["path"]).is_relative_to(shared.data_dir / "worktrees")
    for name in runs:
        release(sync / f"{name}.go")

    for name, run in runs.items():
        other = "right" if name == "left" else "left"
        status = wait_terminal(shared, run["id"])
        assert status["status"] == "succeeded", status
        events = read_log(status["eventsLogPath"])
        seen = stdout_of(events)
        assert f"{name}.txt" in seen and f"{other}.txt" not in seen
        change = changes_of(events)
        assert change == status["workspace"]
        assert change["branch"] == f"od-runs/{run['id']}"
        assert (change["baseCommit"], change["headCommit"]) == (base, base)
        assert change["dirty"] is True and change["removed"] is False
        assert sorted(change["files"], key=lambda f: f["path"]) == [
            {"path": "a.txt", "insertions": 1, "deletions": 0},
            {"path": f"{name}.txt", "insertions": 1, "deletions": 0},
        ]
        worktree = Path(change["path"])
        with shared.client() as http:
            whole = http.get(f"/api/runs/{run['id']}/diff")
            one = http.get(f"/api/runs/{run['id']}/diff", params={"path": "a.txt"})
        assert whole.status_code == 200 and one.status_code == 200
        # A tracked file's diff is what git itself says; the untracked one is in it as new.
        assert one.text == git("diff", base, "--", "a.txt", cwd=worktree)
        assert one.text in whole.text and f"+++ b/{name}.txt" in whole.text
        assert f"{other}.txt" not in whole.text
        # Reading the changes left the worktree's own index alone: the new file is untracked.
        assert f"?? {name}.txt" in git("status", "--porcelain", cwd=worktree)
    assert checkout_state(repo) == before
    assert (repo / "a.txt").read_text() == "one\ntwo\nthree\n"


def test_a_conversation_continues_in_its_worktree(shared: Daemon, repo: Path) -> None:
    """A conversation's second run works in the first one's worktree and branch, sees its
    edit, and another conversation gets a worktree of its own."""
    first, _ = finished(
        shared, command_run(repo, "echo draft > notes.txt", conversationId="conv-wt-1")
    )
    second, events = finished(
        shared, command_run(repo, "cat ../notes.txt; pwd", conversationId="conv-wt-1", cwd="sub")
    )
    other, other_events = finished(
        shared, command_run(repo, "ls ..; ls", conversationId="conv-wt-2")
    )
    assert first["workspace"]["path"] == second["workspace"]["path"]
    assert first["workspace"]["branch"] == second["workspace"]["branch"] == "od-runs/conv-wt-1"
    assert other["workspace"]["path"] != first["workspace"]["path"]
    out = stdout_of(events)
    assert "draft" in out and f"{first['workspace']['path']}/sub" in out  # cwd: in the worktree
    assert "notes.txt" not in stdout_of(other_events)
    assert [f["path"] for f in changes_of(events)["files"]] == ["notes.txt"]


def test_the_diff_is_cut_at_max_bytes_and_pages_on(shared: Daemon, repo: Path) -> None:
    """A diff larger than a page is cut with a marker (text) or hasMore (JSON); the pages,
    read on from nextOffset, join to the whole diff."""
    script = "i=0; while [ $i -lt 300 ]; do echo line-$i >> big.txt; i=$((i+1)); done"
    status, _ = finished(shared, command_run(repo, script))
    url = f"/api/runs/{status['id']}/diff"
    with shared.client() as http:
        whole = http.get(url).text
        cut = http.get(url, params={"maxBytes": 500})
        pages: list[str] = []
        offset, more = 0, True
        while more:
            page = http.get(url, params={"maxBytes": 700, "offset": offset, "format": "json"})
            body = page.json()
            pages.append(body["diff"])
            offset, more = body["nextOffset"], body["hasMore"]
    assert "line-299" in whole and "od-runs: diff cut" not in whole
    assert len(cut.text) < 700 and "# od-runs: diff cut at byte" in cut.text
    assert "".join(pages) == whole and len(pages) > 2


@pytest.mark.anyio
async def test_mcp_get_run_diff_reads_the_diff_in_pages(shared: Daemon, repo: Path) -> None:
    """MCP start_run takes a workspace; get_run_diff returns its diff in pages."""
    async with connect(shared, "http") as client:
        started = await call(
            client,
            "start_run",
            {
                "agentId": "command",
                "command": ["sh", "-c", "echo changed > a.txt"],
                "workspace": {"repo": str(repo)},
                "waitSeconds": 20,
            },
        )
        run_id = started["run"]["id"]
        assert started["run"]["status"] == "succeeded"
        first = await call(client, "get_run_diff", {"runId": run_id, "maxBytes": 40})
        rest = await call(client, "get_run_diff", {"runId": run_id, "offset": first["nextOffset"]})
    assert first["hasMore"] is True and rest["hasMore"] is False
    whole = first["diff"] + rest["diff"]
    assert "-one\n-two\n-three\n+changed\n" in whole


def test_a_run_without_a_workspace_has_no_diff(shared: Daemon) -> None:
    """GET /api/runs/{id}/diff of a plain run: 404 that says it has no workspace."""
    run = shared.create({"agentId": "command", "command": ["true"]})
    wait_terminal(shared, run["id"])
    with shared.client() as http:
        response = http.get(f"/api/runs/{run['id']}/diff")
    assert response.status_code == 404
    assert "no workspace" in response.json()["error"]["message"]


# Bad input -------------------------------------------------------------------------------


def bad_inputs(tmp_path: Path, repo: Path) -> list[tuple[dict[str, Any], str]]:
    plain = tmp_path / "plain"
    plain.mkdir()
    bare = tmp_path / "bare.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    return [
        ({"repo": str(tmp_path / "missing")}, "does not exist"),
        ({"repo": str(plain)}, "is not a git repository"),
        ({"repo": str(bare)}, "is a bare repository"),
        ({"repo": str(repo), "base": "no-such-branch"}, "is not a commit"),
        ({"repo": "relative/repo"}, "must be an absolute path"),
    ]


def test_bad_workspaces_are_422_saying_what_is_wrong(
    shared: Daemon, repo: Path, tmp_path: Path
) -> None:
    """Each bad workspace is refused at create time: 422, one sentence naming the problem,
    and no run and no worktree."""
    cases = bad_inputs(tmp_path, repo)
    cases_cwd = [
        (command_run(repo, "true", cwd="/etc"), "must be relative to the worktree"),
        (command_run(repo, "true", cwd="../.."), "leaves the worktree"),
    ]
    with shared.client() as http:
        before = len(http.get("/api/runs").json()["runs"])
        for workspace, expected in cases:
            body = {"agentId": "command", "command": ["true"], "workspace": workspace}
            response = http.post("/api/runs", json=body)
            assert response.status_code == 422, (workspace, response.text)
            message = response.json()["error"]["message"]
            assert expected in message and message.count(". ") == 0, message
        for body, expected in cases_cwd:
            response = http.post("/api/runs", json=body)
            assert response.status_code == 422 and expected in response.text, response.text
        flag = http.post(
            "/api/runs",
            json=command_run(repo, "true") | {"workspace": {"repo": str(repo), "base": "--help"}},
        )
        assert flag.status_code == 422  # a base that looks like an option never reaches git
        assert len(http.get("/api/runs").json()["runs"]) == before
    assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1


@pytest.mark.anyio
async def test_a_daemon_without_a_data_dir_refuses_worktree_runs(repo: Path) -> None:
    """Without a data dir there is nowhere outside the user's checkout to put a worktree."""
    async with open_service(None) as service:
        request = RunCreate(
            agentId="command", command=["true"], workspace=WorkspaceSpec(repo=str(repo))
        )
        with pytest.raises(Invalid, match="need a daemon with a data dir"):
            await service.start(request)


# Keeping and cleaning up -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keep", "script", "kept"),
    [
        ("changed", "true", False),
        ("changed", "echo x > new.txt", True),
        ("never", "git -c user.email=a@b -c user.name=a commit -q --allow-empty -m c", False),
        ("never", "echo x >> a.txt", True),
        ("always", "true", True),
    ],
)
def test_keep_policies(shared: Daemon, repo: Path, keep: str, script: str, kept: bool) -> None:
    """changed removes a worktree without changes, never removes it unless it has
    uncommitted changes, always keeps it; a branch with commits always stays."""
    status, events = finished(shared, command_run(repo, script, keep=keep))
    assert status["status"] == "succeeded", status
    workspace = status["workspace"]
    assert changes_of(events)["removed"] is (not kept)
    assert Path(workspace["path"]).exists() is kept
    branches = git("branch", "--list", "od-runs/*", cwd=repo)
    committed = workspace["headCommit"] != workspace["baseCommit"]
    assert (workspace["branch"] in branches) is (kept or committed)
    assert git("worktree", "list", "--porcelain", cwd=repo).count(workspace["path"]) == kept


def test_a_conversation_keeps_its_worktree_while_a_run_is_queued(
    shared: Daemon, repo: Path, tmp_path: Path
) -> None:
    """keep=changed acts when the conversation's last run ends, not between its runs."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    first = shared.create(command_run(repo, f"read _ < {gate}", conversationId="conv-wt-q"))
    second = shared.create(command_run(repo, "true", conversationId="conv-wt-q"))
    release(gate)
    one = wait_terminal(shared, first["id"])
    two = wait_terminal(shared, second["id"])
    assert one["workspace"]["removed"] is False
    assert two["workspace"]["removed"] is True
    assert not Path(two["workspace"]["path"]).exists()


@pytest.mark.slow  # two daemon starts: about 15 s on a loaded machine
def test_worktrees_ls_rm_and_prune(data_dir: Path, repo: Path) -> None:
    """`od-runs worktrees ls` lists them; `rm` refuses uncommitted changes unless forced;
    `prune` removes the clean ones; a restart forgets worktrees deleted behind its back."""
    daemon = Daemon(data_dir).start()
    try:
        dirty, _ = finished(daemon, command_run(repo, "echo x >> a.txt", keep="always"))
        clean, _ = finished(daemon, command_run(repo, "true", keep="always"))
        gone, _ = finished(daemon, command_run(repo, "true", keep="always"))
        listed = json.loads(od(daemon, "worktrees", "ls", "--json").stdout)["worktrees"]
        by_id = {e["id"]: e for e in listed}
        assert set(by_id) == {dirty["id"], clean["id"], gone["id"]}
        assert by_id[dirty["id"]]["dirty"] is True and by_id[clean["id"]]["dirty"] is False
        assert dirty["id"] in od(daemon, "worktrees", "ls").stdout

        refused = od(daemon, "worktrees", "rm", dirty["id"])
        assert refused.returncode != 0 and "uncommitted changes" in refused.stderr
        assert Path(dirty["workspace"]["path"]).exists()

        pruned = json.loads(od(daemon, "worktrees", "prune", "--json").stdout)["worktrees"]
        assert {e["id"] for e in pruned} == {clean["id"], gone["id"]}
        assert Path(dirty["workspace"]["path"]).exists()
        assert not Path(clean["workspace"]["path"]).exists()

        forced = od(daemon, "worktrees", "rm", "--force", dirty["id"])
        assert forced.returncode == 0, forced.stderr
        assert not Path(dirty["workspace"]["path"]).exists()
        assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1
        assert git("branch", "--list", "od-runs/*", cwd=repo) == ""

        # A worktree deleted behind the daemon's back: start-up reconciles git and the list.
        left, _ = finished(daemon, command_run(repo, "true", keep="always"))
    finally:
        daemon.stop()
    subprocess.run(["rm", "-rf", left["workspace"]["path"]], check=True)
    daemon = Daemon(data_dir).start()
    try:
        with daemon.client() as http:
            assert http.get("/api/worktrees").json() == {"worktrees": []}
        assert left["workspace"]["path"] not in git("worktree", "list", cwd=repo)
    finally:
        daemon.stop()


def test_start_worktree_on_the_command_line(shared: Daemon, repo: Path) -> None:
    """`od-runs start --worktree REPO --base REF` starts a worktree run from REF."""
    git("branch", "older", cwd=repo)
    (repo / "a.txt").write_text("user's own edit\n")  # uncommitted, and it must stay so
    done = od(
        shared, "start", "--agent", "command", "--worktree", str(repo), "--base", "older",
        "--json", "--", "cat", "a.txt",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    status = wait_terminal(shared, body["id"])
    assert status["workspace"]["baseCommit"] == git("rev-parse", "older", cwd=repo).strip()
    assert "user's own edit" not in stdout_of(read_log(status["eventsLogPath"]))
    assert (repo / "a.txt").read_text() == "user's own edit\n"
    # keep=changed: nothing changed, so the worktree went before the run's end.
    assert status["workspace"]["removed"] is True
    assert not Path(status["workspace"]["path"]).exists()


def test_deleting_a_run_removes_its_worktree_but_not_uncommitted_work_unless_forced(
    shared: Daemon, repo: Path
) -> None:
    """Issue 15 with 12: DELETE removes a run's clean worktree; one with uncommitted changes
    is a 409 saying so (nothing removed) until ?force=true (invariant 13: never silently)."""
    clean, _ = finished(shared, command_run(repo, "true", keep="always"))
    dirty, _ = finished(shared, command_run(repo, "echo wip > notes.txt", keep="always"))
    assert Path(clean["workspace"]["path"]).exists() and Path(dirty["workspace"]["path"]).exists()
    with http_client(shared.url) as client:
        assert client.delete(f"/api/runs/{clean['id']}").status_code == 200
        assert not Path(clean["workspace"]["path"]).exists()
        refused = client.delete(f"/api/runs/{dirty['id']}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "WORKTREE_DIRTY"
        assert (Path(dirty["workspace"]["path"]) / "notes.txt").read_text() == "wip\n"
        assert client.get(f"/api/runs/{dirty['id']}").status_code == 200
        assert client.delete(f"/api/runs/{dirty['id']}?force=true").status_code == 200
        assert not Path(dirty["workspace"]["path"]).exists()
        assert client.get(f"/api/runs/{dirty['id']}").status_code == 404


@pytest.mark.anyio
async def test_a_restart_removes_clean_worktrees_whose_runs_are_gone_and_keeps_changed_ones(
    tmp_path: Path, repo: Path
) -> None:
    """Start-up reconciliation: a worktree none of whose runs exist any more (its row was lost
    to a crash, or removed behind od-runs' back) is removed if clean, and kept, with its
    uncommitted work, if not (invariant 13: od-runs never throws away work on its own)."""
    data = tmp_path / "data"
    bodies = {
        "clean": RunCreate.model_validate(command_run(repo, "true", keep="always")),
        "dirty": RunCreate.model_validate(command_run(repo, "echo wip > w.txt", keep="always")),
    }
    paths: dict[str, Path] = {}
    async with open_service(data) as service:
        for name, body in bodies.items():
            run = await service.start(body)
            status = await service.wait(run.id, timeout=30)
            assert status.status == "succeeded" and status.workspace is not None
            paths[name] = Path(status.workspace.path)
            # The row goes as a crash mid-delete would leave it: the worktree stays behind.
            assert await service.store.delete(run.id)
    assert paths["clean"].exists() and paths["dirty"].exists()
    async with open_service(data):
        pass
    assert not paths["clean"].exists()
    assert (paths["dirty"] / "w.txt").read_text() == "wip\n"
    listed = git("worktree", "list", "--porcelain", cwd=repo)
    assert str(paths["clean"]) not in listed and str(paths["dirty"]) in listed
