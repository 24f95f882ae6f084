"""The `od-runs` command line as a person uses it, against a real daemon."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from od_runs.cli import main as cli_main

from .codex_helpers import APP_SERVER, codex_daemon, scripted_codex
from .conftest import (
    TERMINAL,
    Daemon,
    assert_dense,
    free_port,
    http_client,
    poll,
    process_alive,
    read_log,
    wait_terminal,
)
from .fakes.responses_server import Message

RUN_ID = re.compile(r"run-[0-9a-f]{16}")
COMMANDS = (
    "serve",
    "mcp",
    "start",
    "ls",
    "get",
    "cancel",
    "tail",
    "rm",
    "prune",
    "sessions",
    "workers",
    "mcp-config",
)


def cli_env(url: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI call: no OD_RUNS_* of the developer's, OD_RUNS_URL if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OD_RUNS_")}
    if url is not None:
        env["OD_RUNS_URL"] = url
    return {**env, **(extra or {})}


def od(url: str | None, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `python -m od_runs ARGS` with OD_RUNS_URL=url and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "od_runs", *args],
        env=cli_env(url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def od_many(
    url: str | None, calls: list[list[str]], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Several CLI calls at once (each is a fresh interpreter), results in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "od_runs", *args],
            env=cli_env(url, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in calls
    ]
    results = []
    for args, proc in zip(calls, procs, strict=True):
        out, err = proc.communicate(timeout=30)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def create(daemon: Daemon, body: dict[str, Any]) -> dict[str, Any]:
    """A run created over REST."""
    with daemon.client() as http:
        response = http.post("/api/runs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def wait_status(daemon: Daemon, run_id: str, wanted: tuple[str, ...]) -> dict[str, Any]:
    """The status body once the run's status is one of wanted."""
    with daemon.client() as http:

        def reached() -> dict[str, Any] | None:
            body: dict[str, Any] = http.get(f"/api/runs/{run_id}").json()
            return body if body["status"] in wanted else None

        return poll(f"run {run_id} to reach {wanted}", reached)  # type: ignore[no-any-return]


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit, one readable error on stderr, no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_start_follow_prints_the_run_as_it_goes_and_exits_0(shared: Daemon) -> None:
    """`start --agent demo "prompt" --follow` shows start, the agent's work and the end; exit 0."""
    result = od(
        shared.url, "start", "--agent", "demo", "fix the tests", "--events", "10", "--fast", "-f"
    )
    assert result.returncode == 0, result.stderr
    found = RUN_ID.search(result.stderr)
    assert found, result.stderr
    run_id = found.group()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("▶ started demo (pid ")
    assert "fix the tests" in result.stdout
    assert lines[-1] == "■ succeeded (code 0)"
    status = wait_status(shared, run_id, TERMINAL)
    assert status["status"] == "succeeded"
    assert status["eventsLogPath"] in result.stderr
    assert_dense(read_log(status["eventsLogPath"]))


def test_start_without_follow_prints_the_new_run(shared: Daemon) -> None:
    """`start --json` prints the status body; plain `start` prints one status line with the id."""
    as_json = od(shared.url, "start", "--json", "--events", "4", "--fast", "quick one")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert RUN_ID.fullmatch(body["id"]) and body["agentId"] == "demo"
    plain = od(shared.url, "start", "--events", "4", "--fast", "--project", "p-start", "another")
    assert plain.returncode == 0, plain.stderr
    assert RUN_ID.match(plain.stdout) and "p-start" in plain.stdout
    wait_status(shared, body["id"], TERMINAL)
    wait_status(shared, plain.stdout.split()[0], TERMINAL)


def test_ls_and_get_show_a_run(shared: Daemon) -> None:
    """`ls` is a table of runs, `get ID` shows status and log, `get --json` is the status body."""
    run = create(
        shared,
        {"prompt": "list me", "projectId": "p-ls", "demo": {"events": 5, "fast": True}},
    )
    wait_status(shared, run["id"], TERMINAL)
    listing, filtered, other, as_json, got, got_json = od_many(
        shared.url,
        [
            ["ls"],
            ["ls", "--project", "p-ls"],
            ["ls", "--project", "p-nobody"],
            ["ls", "--json", "--project", "p-ls"],
            ["get", run["id"]],
            ["get", run["id"], "--json"],
        ],
    )
    for result in (listing, filtered, other, as_json, got, got_json):
        assert result.returncode == 0, (result.args, result.stderr)
    assert run["id"] in listing.stdout
    header, line = filtered.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "AGENT", "PROJECT/CONV", "CREATED", "EVENTS", "ERROR"]
    assert line.split()[:4] == [run["id"], "succeeded", "demo", "p-ls"]
    # Aligned columns: every cell starts where its header does.
    assert line.index("succeeded") == header.index("STATUS")
    assert line.index("p-ls") == header.index("PROJECT/CONV")
    assert line.split()[6] == str(len(read_log(run["eventsLogPath"])))
    assert other.stdout.strip() == "no runs"
    assert [r["id"] for r in json.loads(as_json.stdout)["runs"]] == [run["id"]]
    assert got.stdout.startswith(run["id"]) and "succeeded" in got.stdout
    assert f"log: {run['eventsLogPath']}" in got.stdout
    body = json.loads(got_json.stdout)
    assert body["id"] == run["id"] and body["status"] == "succeeded"
    assert body["eventsLogPath"] == run["eventsLogPath"]


def test_tail_of_a_finished_run_prints_every_event_and_exits_0(shared: Daemon) -> None:
    """`tail ID` replays the whole finished run; `--json` gives every event of the log, in order."""
    run = create(shared, {"prompt": "tail me", "demo": {"events": 12, "fast": True}})
    wait_status(shared, run["id"], TERMINAL)
    log = read_log(run["eventsLogPath"])
    plain, as_json, after = od_many(
        shared.url,
        [["tail", run["id"]], ["tail", run["id"], "--json"], ["tail", run["id"], "--after", "5"]],
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("▶ started demo")
    assert plain.stdout.splitlines()[-1] == "■ succeeded (code 0)"
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == log
    assert after.returncode == 0, after.stderr
    assert "▶ started" not in after.stdout and "■ succeeded" in after.stdout


def test_tail_of_a_failed_run_exits_non_zero(shared: Daemon) -> None:
    """A command run that exits 3: `tail` shows the failure and exits 1 (like `start -f`)."""
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    run = create(shared, {"agentId": "command", "command": failing})
    wait_status(shared, run["id"], TERMINAL)
    result = od(shared.url, "tail", run["id"])
    assert result.returncode == 1, result
    assert "■ failed (code 3, errorCode AGENT_EXITED)" in result.stdout
    followed = od(shared.url, "start", "--agent", "command", "-f", "--", *failing)
    assert followed.returncode == 1, followed
    assert "■ failed" in followed.stdout


def test_cancel_stops_a_running_run(shared: Daemon) -> None:
    """`cancel ID` returns once the run is canceled; `tail` of it then exits 2."""
    started = od(
        shared.url,
        "start",
        "--json",
        "--agent",
        "command",
        "--",
        sys.executable,
        "-c",
        "import signal; signal.pause()",
    )
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]
    running = wait_status(shared, run_id, ("running", *TERMINAL))
    assert running["status"] == "running"
    result = od(shared.url, "cancel", run_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(run_id) and "canceled" in result.stdout
    with shared.client() as http:
        status = http.get(f"/api/runs/{run_id}").json()
    assert status["status"] == "canceled" and status["cancelRequested"] is True
    tail = od(shared.url, "tail", run_id)
    assert tail.returncode == 2, tail
    assert "■ canceled" in tail.stdout


def test_get_and_tail_without_an_id_take_the_newest_run_and_name_it(daemon: Daemon) -> None:
    """With no runs, `get`/`tail` without RUN_ID say so; then they take the newest run and
    name it on stderr, so the output is never about a run the user did not expect."""
    for result in od_many(daemon.url, [["get"], ["tail"]]):
        assert_clean_failure(result, "no runs yet", "od-runs start", "NOT_FOUND")
    older = create(daemon, {"prompt": "older", "demo": {"events": 6, "fast": True}})
    wait_status(daemon, older["id"], TERMINAL)
    newest = create(daemon, {"prompt": "newest", "demo": {"events": 8, "fast": True}})
    got, tail = od_many(daemon.url, [["get", "--json"], ["tail", "--json"]])
    assert got.returncode == 0 and tail.returncode == 0, (got.stderr, tail.stderr)
    for result in (got, tail):
        assert result.stderr.strip() == f"newest run: {newest['id']}"
    assert json.loads(got.stdout)["id"] == newest["id"]
    # tail followed the newest run to its end: exactly its log.
    log = read_log(newest["eventsLogPath"])
    assert [json.loads(line) for line in tail.stdout.splitlines()] == log
    assert log[-1]["event"] == "end"


def test_an_unknown_run_id_fails_cleanly(shared: Daemon) -> None:
    """get, tail and cancel of a missing run: non-zero, `Error: no run with id …`, no traceback."""
    missing = "run-0123456789abcdef"
    results = od_many(
        shared.url,
        [
            ["get", missing],
            ["get", missing, "--json"],
            ["tail", missing],
            ["cancel", missing],
            ["get", "../../etc/passwd"],
        ],
    )
    for result in results[:4]:
        assert_clean_failure(result, f"no run with id '{missing}'", "NOT_FOUND")
    assert_clean_failure(results[4], "NOT_FOUND")


def test_an_unreachable_daemon_is_reported_without_a_traceback() -> None:
    """With nothing listening at --url, client commands say so and exit non-zero."""
    url = f"http://127.0.0.1:{free_port()}"
    results = od_many(None, [["--url", url, "ls"], ["--url", url, "get", "run-0123456789abcdef"]])
    for result in results:
        assert_clean_failure(result, "cannot reach the od-runs daemon", url)


def test_the_url_flag_and_the_env_var_both_find_the_daemon(shared: Daemon) -> None:
    """`--url` works without OD_RUNS_URL, and OD_RUNS_URL works without `--url`."""
    by_flag, by_env = od_many(None, [["--url", shared.url, "ls", "--json"]]) + od_many(
        shared.url, [["ls", "--json"]]
    )
    assert by_flag.returncode == 0 and by_env.returncode == 0, (by_flag.stderr, by_env.stderr)
    assert "runs" in json.loads(by_flag.stdout) and "runs" in json.loads(by_env.stdout)


# --url and --token before or after the command -------------------------------------------

TOKEN = "cli-test-token-7f3a"
# Each command that talks to a daemon (or pins one, mcp-config), and the group options it
# also takes after its own name.
AFTER_COMMAND: dict[tuple[str, ...], tuple[str, ...]] = {
    ("serve",): ("--token",),
    ("mcp",): ("--url", "--token"),
    ("start",): ("--url", "--token"),
    ("ls",): ("--url", "--token"),
    ("get",): ("--url", "--token"),
    ("cancel",): ("--url", "--token"),
    ("tail",): ("--url", "--token"),
    ("rm",): ("--url", "--token"),
    ("prune",): ("--url", "--token"),
    ("sessions",): ("--url", "--token"),
    ("sessions", "ls"): ("--url", "--token"),
    ("sessions", "get"): ("--url", "--token"),
    ("sessions", "retire"): ("--url", "--token"),
    ("worktrees",): ("--url", "--token"),
    ("worktrees", "ls"): ("--url", "--token"),
    ("worktrees", "rm"): ("--url", "--token"),
    ("worktrees", "prune"): ("--url", "--token"),
    ("workers",): ("--url", "--token"),
    ("mcp-config",): ("--url", "--token"),
}


@pytest.fixture
def token_daemon(data_dir: Path) -> Iterator[Daemon]:
    """A daemon started as `od-runs serve ... --token TOKEN`, with no token in its env."""
    daemon = Daemon(data_dir, None, "--token", TOKEN)
    daemon.env.pop("OD_RUNS_TOKEN", None)
    daemon.headers = {"Authorization": f"Bearer {TOKEN}"}
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def test_serve_takes_the_token_after_the_command(token_daemon: Daemon) -> None:
    """`od-runs serve --token T` guards the daemon: no token is refused, the token is let in."""
    with http_client(token_daemon.url) as anonymous:
        refused = anonymous.get("/api/runs")
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"
    with token_daemon.client() as bearer:
        assert bearer.get("/api/runs").status_code == 200


def test_url_and_token_work_before_and_after_the_command(token_daemon: Daemon) -> None:
    """`od-runs ls --url U --token T` and `od-runs --url U --token T ls` both list the runs;
    given both ways, the one after the command wins; the env vars still count."""
    url = token_daemon.url
    unreachable = f"http://127.0.0.1:{free_port()}"
    ok_calls = [
        ["ls", "--url", url, "--token", TOKEN, "--json"],
        ["--url", url, "--token", TOKEN, "ls", "--json"],
        ["--url", unreachable, "--token", "wrong", "ls", "--url", url, "--token", TOKEN, "--json"],
        ["sessions", "ls", "--url", url, "--token", TOKEN, "--json"],
        ["sessions", "--url", url, "--token", TOKEN, "ls", "--json"],
    ]
    refused_calls = [
        ["ls", "--url", url, "--json"],
        ["--token", TOKEN, "ls", "--url", url, "--token", "wrong", "--json"],
    ]
    results = od_many(None, ok_calls + refused_calls)
    for args, result in zip(ok_calls, results, strict=False):
        assert result.returncode == 0, (args, result.stderr)
        assert set(json.loads(result.stdout)) <= {"runs", "sessions"}, args
    for result in results[len(ok_calls) :]:
        assert_clean_failure(result, "UNAUTHORIZED")
    # The environment: read when no flag is given, beaten by a flag after the command.
    (by_env,) = od_many(None, [["ls", "--json"]], env={"OD_RUNS_URL": url, "OD_RUNS_TOKEN": TOKEN})
    (flag_beats_env,) = od_many(
        None,
        [["ls", "--url", url, "--token", TOKEN, "--json"]],
        env={"OD_RUNS_URL": unreachable, "OD_RUNS_TOKEN": "wrong"},
    )
    assert by_env.returncode == 0, by_env.stderr
    assert flag_beats_env.returncode == 0, flag_beats_env.stderr


def test_mcp_config_takes_the_url_and_token_after_the_command() -> None:
    """`mcp-config --url U --token T` pins both (`od-runs mcp --url U`: test_mcp_lazy.py)."""
    elsewhere = f"http://127.0.0.1:{free_port()}"
    wanted = f"http://127.0.0.1:{free_port()}"
    pinned = ["--url", wanted, "--token", TOKEN]
    config_result = od(elsewhere, "--url", elsewhere, "mcp-config", "codex", "--json", *pinned)
    assert config_result.returncode == 0, config_result.stderr
    entry_env = json.loads(config_result.stdout)["entry"]["env"]
    assert entry_env == {"OD_RUNS_URL": wanted, "OD_RUNS_TOKEN": TOKEN}


def test_help_of_each_command_names_the_options_it_takes_after_its_name() -> None:
    """`--help` of serve names --token; of every client command, --url and --token."""
    group = cli_main
    assert isinstance(group, click.Group)
    # A new command has to say here which of the two it takes.
    assert set(AFTER_COMMAND) == {path for path, _ in every_command(group)}
    paths = list(AFTER_COMMAND)
    results = od_many(None, [[*path, "--help"] for path in paths])
    for path, result in zip(paths, results, strict=True):
        assert result.returncode == 0, (path, result.stderr)
        for option in AFTER_COMMAND[path]:
            assert re.search(rf"^\s+{option} TEXT\b", result.stdout, re.M), (path, option)
            assert f"OD_RUNS_{option[2:].upper()}" in result.stdout, (path, option)
    assert "--url" not in results[0].stdout  # serve listens; it has no daemon to reach


def every_command(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    """Each command of a group with its path, descending into subgroups (`sessions ls`)."""
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found += every_command(command, (*prefix, name))
    return found


def test_every_subcommand_explains_itself_in_help() -> None:
    """`--help` of the tool and of each subcommand exits 0 with usage, purpose and every option."""
    group = cli_main
    assert isinstance(group, click.Group)
    assert set(COMMANDS) <= set(group.commands)
    commands = every_command(group)
    results = od_many(None, [["--help"], *[[*path, "--help"] for path, _ in commands]])
    top = results[0]
    assert top.returncode == 0 and top.stdout.startswith("Usage: ")
    for name in group.commands:
        assert name in top.stdout
    for (path, command), result in zip(commands, results[1:], strict=True):
        name = " ".join(path)
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.startswith("Usage: "), name
        assert f" {name} " in result.stdout.splitlines()[0]
        summary = (command.help or "").split("\n")[0].split(":")[0]
        assert summary and summary.split()[0] in result.stdout, name
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert sub in result.stdout, (name, sub)
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{name} {param.opts[0]} has no help text"
                assert param.opts[-1] in result.stdout, (name, param.opts)


def test_start_refuses_a_bad_env_pair_before_talking_to_the_daemon() -> None:
    """A usage mistake is a usage error (exit 2) with the option named, even with no daemon."""
    url = f"http://127.0.0.1:{free_port()}"
    result = od(url, "start", "--env", "NOEQUALS", "hello")
    assert result.returncode == 2, result
    assert "--env" in result.stderr and "Traceback" not in result.stderr
    command = od(url, "start", "--agent", "command")
    assert command.returncode == 2 and "needs the command" in command.stderr


# od-runs sessions -------------------------------------------------------------------------


def test_sessions_without_any_say_so_and_unknown_ids_fail_cleanly(shared: Daemon) -> None:
    """`sessions ls` of a daemon with no session prints `no sessions` (`--json`: an empty
    list); get and retire of an unknown or malformed id are one-line NOT_FOUND errors."""
    missing = "ses-0123456789abcdef"
    empty, empty_json, got, retired, malformed, bad_status = od_many(
        shared.url,
        [
            ["sessions", "ls"],
            ["sessions", "ls", "--json"],
            ["sessions", "get", missing],
            ["sessions", "retire", missing],
            ["sessions", "get", "../../etc/passwd"],
            ["sessions", "ls", "--status", "busy"],
        ],
    )
    assert (empty.returncode, empty.stdout) == (0, "no sessions\n"), empty.stderr
    assert json.loads(empty_json.stdout) == {"sessions": []}
    for result in (got, retired):
        assert_clean_failure(result, f"no session with id '{missing}'", "NOT_FOUND")
    assert_clean_failure(malformed, "NOT_FOUND")
    assert bad_status.returncode == 2 and "--status" in bad_status.stderr


@pytest.mark.needs_cli("codex")
def test_sessions_ls_get_and_retire_a_real_codex_app_server_session(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two turns of a real `codex app-server` on the scripted model: `sessions ls` lists the
    conversation's session, `get` shows its turns, `retire` is a clean SESSION_BUSY error
    while the second turn runs, then stops the process; retiring it again fails cleanly."""
    with scripted_codex(tmp_path, APP_SERVER) as codex:
        held = codex.hold(after=[Message("Two.")])
        codex.server.script([Message("One.")], held)
        daemon = codex_daemon(data_dir)
        body = codex.request("first").model_dump(mode="json", exclude_unset=True)
        daemon.start()
        try:
            first = wait_terminal(daemon, daemon.create(body)["id"])
            listing, as_json, other, none_retired = od_many(
                daemon.url,
                [
                    ["sessions", "ls"],
                    ["sessions", "ls", "--conversation", "conv-1", "--json"],
                    ["sessions", "ls", "--conversation", "conv-nobody"],
                    ["sessions", "ls", "--status", "retired"],
                ],
            )
            (session,) = json.loads(as_json.stdout)["sessions"]
            got, got_json = od_many(
                daemon.url,
                [["sessions", "get", session["id"]], ["sessions", "get", session["id"], "--json"]],
            )
            second = daemon.create({**body, "prompt": "second"})
            held.wait_reached()
            busy, active = od_many(
                daemon.url,
                [
                    ["sessions", "retire", session["id"]],
                    ["sessions", "ls", "--status", "active", "--json"],
                ],
            )
            held.release()
            second = wait_terminal(daemon, second["id"])
            retired = od(daemon.url, "sessions", "retire", session["id"])
            again, listed_retired = od_many(
                daemon.url,
                [
                    ["sessions", "retire", session["id"]],
                    ["sessions", "ls", "--status", "retired", "--json"],
                ],
            )
        finally:
            daemon.stop()
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    pid = first["childPid"]
    assert (session["conversationId"], session["status"], session["pid"]) == ("conv-1", "idle", pid)
    # The plain table: a header and the session, each cell under its header.
    header, line = listing.stdout.splitlines()
    assert header.split() == [
        "ID", "STATUS", "AGENT", "CONVERSATION", "PID", "LAST", "RUN", "TURN", "UPDATED"
    ]  # fmt: skip
    assert line.split()[:7] == [
        session["id"], "idle", "codex-app-server", "conv-1", str(pid), first["id"], "completed"
    ]  # fmt: skip
    for column, value in (("STATUS", "idle"), ("CONVERSATION", "conv-1"), ("TURN", "completed")):
        assert line.index(value) == header.index(column), column
    assert other.stdout == "no sessions\n" and none_retired.stdout == "no sessions\n"
    # get: the status line, the last run, then one line per recent event, oldest first.
    status_line, last_run, *event_lines = got.stdout.splitlines()
    assert status_line.split()[:4] == [session["id"], "idle", "codex-app-server", "conv-1"]
    assert f"thread {first['sessionRef']['threadId']}" in status_line
    assert f"pid {pid}" in status_line
    assert last_run == f"  last run: {first['id']} (completed)"
    assert [e.split()[2] for e in event_lines] == [
        "spawned",
        "thread.started",
        "turn.started",
        "turn.ended",
    ]
    assert f"pid={pid}" in event_lines[0]
    assert f"runId={first['id']}" in event_lines[3] and "status=completed" in event_lines[3]
    detail = json.loads(got_json.stdout)
    assert detail["id"] == session["id"] and len(detail["recentEvents"]) == len(event_lines)
    # While the second turn runs, the session is active and refuses to retire.
    assert_clean_failure(busy, "SESSION_BUSY", second["id"])
    assert [s["status"] for s in json.loads(active.stdout)["sessions"]] == ["active"]
    assert second["childPid"] == pid
    # Retired: the status line says so and why, and the process is gone.
    assert retired.returncode == 0, retired.stderr
    assert retired.stdout.split()[:2] == [session["id"], "retired"]
    assert "(retired on request)" in retired.stdout
    assert not process_alive(pid)
    assert_clean_failure(again, "already retired", "ALREADY_RETIRED")
    assert [s["id"] for s in json.loads(listed_retired.stdout)["sessions"]] == [session["id"]]
