"""`od-runs mcp` starts nothing it does not need, and the daemon it starts goes away by itself.

Driven through the real MCP SDK client over stdio, with the client's cwd, HOME and
XDG_DATA_HOME in tmp_path, so a stray directory or daemon would show.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from od_runs.config import user_data_dir

from .conftest import Daemon, call, error_text, free_port, http_client, poll

# Upper bound for one whole test.
TEST_DEADLINE = 60.0
# How long a daemon may take to stop once it is idle (its period plus slack for the load).
STOP_DEADLINE = 30.0
TOOLS = {"start_run", "get_run", "list_runs", "cancel_run", "wait_run", "get_run_events"}
LONG_DEMO = {"events": 2000, "durationSeconds": 60}


def serve_processes(port: int) -> list[psutil.Process]:
    """The `od-runs serve` processes listening (or about to) on port, by their argv."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "serve" in argv and "--port" in argv and str(port) in argv:
            found.append(proc)
    return found


def gone(proc: psutil.Process) -> bool:
    """True once proc has exited and been reaped (not merely a zombie)."""
    try:
        return proc.status() == psutil.STATUS_DEAD or not proc.is_running()
    except psutil.NoSuchProcess:
        return True


def listening(port: int) -> bool:
    """True if something accepts connections on the loopback port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def files_under(*roots: Path) -> list[Path]:
    """Everything below the roots (the roots themselves left out)."""
    return [path for root in roots for path in root.rglob("*")]


@contextmanager
def stopping_daemons(port: int) -> Iterator[None]:
    """On the way out, stop every daemon spawned for port (they are detached on purpose)."""
    try:
        yield
    finally:
        for proc in serve_processes(port):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except psutil.TimeoutExpired:
                proc.kill()


class Sandbox:
    """A user with their own HOME, XDG_DATA_HOME and a working dir, all in tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.xdg = tmp_path / "xdg-data"
        self.cwd = tmp_path / "editor-cwd"
        for path in (self.home, self.xdg, self.cwd):
            path.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = tmp_path / "mcp-stderr.txt"

    def params(self, *args: str) -> StdioServerParameters:
        """`python -m od_runs mcp ARGS` as this user, from their working dir."""
        return StdioServerParameters(
            command=sys.executable,
            args=["-m", "od_runs", "mcp", *args],
            env={
                "OD_RUNS_URL": self.url,
                "OD_RUNS_LOG_LEVEL": "warning",
                "HOME": str(self.home),
                "XDG_DATA_HOME": str(self.xdg),
            },
            cwd=self.cwd,
        )

    @asynccontextmanager
    async def client(self, *args: str) -> AsyncIterator[Client]:
        """An initialised SDK client of `od-runs mcp ARGS`; its stderr goes to self.stderr."""
        with open(self.stderr, "a") as errlog:
            async with Client(stdio_client(self.params(*args), errlog=errlog)) as client:
                yield client


def test_user_data_dir_follows_xdg_else_home() -> None:
    """The per-user data dir is $XDG_DATA_HOME/od-runs, else ~/.local/share/od-runs; a
    relative XDG_DATA_HOME is ignored (it would depend on the current directory)."""
    assert user_data_dir({"XDG_DATA_HOME": "/x/data", "HOME": "/h"}) == Path("/x/data/od-runs")
    assert user_data_dir({"HOME": "/h"}) == Path("/h/.local/share/od-runs")
    assert user_data_dir({"XDG_DATA_HOME": "rel", "HOME": "/h"}) == Path("/h/.local/share/od-runs")


@pytest.mark.anyio
async def test_listing_starts_nothing_and_the_first_call_starts_the_daemon(
    tmp_path: Path,
) -> None:
    """initialize and the tool, resource, template and prompt lists start no daemon and
    create no directory; the first list_runs starts one under $XDG_DATA_HOME/od-runs that
    stops after 15 minutes idle, with a private daemon.log that stderr points to."""
    user = Sandbox(tmp_path)
    data_dir = user.xdg / "od-runs"
    with stopping_daemons(user.port), anyio.fail_after(TEST_DEADLINE):
        async with user.client() as client:
            assert {tool.name for tool in (await client.list_tools()).tools} >= TOOLS
            resources = (await client.list_resources()).resources
            assert "runs://active" in [str(r.uri) for r in resources]
            assert (await client.list_resource_templates()).resource_templates
            assert (await client.list_prompts()).prompts
            assert not listening(user.port)
            assert serve_processes(user.port) == []
            assert files_under(user.home, user.xdg, user.cwd) == []

            listed = await call(client, "list_runs", {})
            assert listed["runs"] == []
            (daemon,) = serve_processes(user.port)
            argv = daemon.cmdline()
            assert argv[argv.index("--data-dir") + 1] == str(data_dir)
            assert argv[argv.index("--idle-exit") + 1] == "900"
            assert (data_dir / "od-runs.sqlite3").is_file()
            log_mode = (data_dir / "daemon.log").stat().st_mode
            assert stat.S_IMODE(log_mode) == 0o600
            # Nothing in the editor's directory or directly in HOME.
            assert files_under(user.cwd) == []
            assert files_under(user.home) == []
        assert str(data_dir / "daemon.log") in user.stderr.read_text()


@pytest.mark.slow
@pytest.mark.anyio
async def test_mcp_starts_the_daemon_again_after_its_idle_exit(tmp_path: Path) -> None:
    """A daemon that `od-runs mcp --daemon-idle-exit 1` started stops by itself once idle,
    though the MCP client is still connected; the next tool call starts a new one, in the
    --data-dir given (as mcp-config entries pin it)."""
    user = Sandbox(tmp_path)
    data_dir = tmp_path / "pinned"
    with stopping_daemons(user.port), anyio.fail_after(TEST_DEADLINE):
        async with user.client("--data-dir", str(data_dir), "--daemon-idle-exit", "1") as client:
            await call(client, "list_runs", {})
            (first,) = serve_processes(user.port)
            await anyio.to_thread.run_sync(
                lambda: poll("the idle daemon to stop", lambda: gone(first), STOP_DEADLINE)
            )
            assert not listening(user.port)

            started = await call(client, "start_run", {"demo": {"events": 5, "fast": True}})
            assert started["run"]["eventsLogPath"].startswith(str(data_dir.resolve()))
            (second,) = serve_processes(user.port)
            assert second.pid != first.pid
        assert "no active run and no request" in (data_dir / "daemon.log").read_text()


@pytest.mark.anyio
async def test_mcp_without_spawn_names_the_url_it_could_not_reach(tmp_path: Path) -> None:
    """`od-runs mcp --no-spawn --url U` (U given after the command, OD_RUNS_URL elsewhere)
    lists its tools without a daemon, and its first call is a DAEMON_UNAVAILABLE tool error
    naming U; nothing is started."""
    user = Sandbox(tmp_path)
    wanted = f"http://127.0.0.1:{free_port()}"
    with anyio.fail_after(TEST_DEADLINE):
        async with user.client("--no-spawn", "--url", wanted) as client:
            assert (await client.list_tools()).tools
            result = await client.call_tool("list_runs", {})
    assert result.is_error
    assert "DAEMON_UNAVAILABLE" in error_text(result) and wanted in error_text(result)
    assert serve_processes(user.port) == []
    assert files_under(user.home, user.xdg, user.cwd) == []


@pytest.mark.anyio
async def test_mcp_guards_the_daemon_it_starts_with_its_token(tmp_path: Path) -> None:
    """`od-runs mcp --url U --token T` with no daemon at U starts one (on the first call)
    that asks for T, and the token stays out of the daemon's argv."""
    user = Sandbox(tmp_path)
    token = "mcp-lazy-token-5c1e"
    with stopping_daemons(user.port), anyio.fail_after(TEST_DEADLINE):
        async with user.client("--url", user.url, "--token", token) as client:
            await call(client, "list_runs", {})
            (daemon,) = serve_processes(user.port)
            assert not any(token in arg for arg in daemon.cmdline())
            with http_client(user.url) as anonymous:
                assert anonymous.get("/api/runs").status_code == 401
            with http_client(user.url, headers={"Authorization": f"Bearer {token}"}) as bearer:
                assert bearer.get("/api/runs").status_code == 200


def still_running(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """True if proc is still alive after `seconds` (it must not exit in that time)."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


@pytest.mark.slow
def test_serve_idle_exit_waits_for_runs_and_requests(data_dir: Path) -> None:
    """`od-runs serve --idle-exit 1` stays up while a run is active and while a client keeps
    polling, then stops by itself (exit 0) once it had neither for a second."""
    daemon = Daemon(data_dir, None, "--idle-exit", "1").start()
    assert daemon.proc is not None
    try:
        run = daemon.create({"agentId": "demo", "prompt": "x", "demo": LONG_DEMO})
        assert still_running(daemon.proc, 3.0), "stopped while a run was active"
        with daemon.client() as http:
            http.post(f"/api/runs/{run['id']}/cancel").raise_for_status()
            until = time.monotonic() + 3.0
            while time.monotonic() < until:
                assert http.get("/api/runs").status_code == 200, "stopped while polled"
                assert still_running(daemon.proc, 0.2)
        assert daemon.proc.wait(timeout=STOP_DEADLINE) == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    assert "(--idle-exit)" in daemon.log_path.read_text()


def test_mcp_with_stdin_from_dev_null_exits_0_at_once(tmp_path: Path) -> None:
    """`od-runs mcp < /dev/null` (a device the event loop cannot watch) exits 0 without a
    traceback, starting nothing."""
    user = Sandbox(tmp_path)
    params = user.params()
    with open(os.devnull, "rb") as devnull:
        done = subprocess.run(
            [params.command, *params.args],
            stdin=devnull,
            capture_output=True,
            text=True,
            cwd=user.cwd,
            env={**os.environ, **(params.env or {})},
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert serve_processes(user.port) == []
    assert files_under(user.home, user.xdg, user.cwd) == []
