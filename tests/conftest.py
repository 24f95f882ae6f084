"""Shared test helpers: a real daemon in a subprocess, child scripts, log readers."""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

PR_SET_PDEATHSIG = 1
# Every test client talks plain HTTP on loopback, yet httpx builds a TLS context (about 30 ms
# of CPU) per client unless handed one: this one is built once and shared.
LOOPBACK_TLS = ssl.create_default_context()
# How long a daemon may take to answer /api/health after start.
DAEMON_START_TIMEOUT = 20.0
# How long a test run may take to reach a terminal status.
RUN_DEADLINE = 30.0
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_log(path: str | Path) -> list[dict]:
    """Every line of an events.jsonl, parsed; fails on a torn or invalid line."""
    text = Path(path).read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "log ends in a torn line"
    return [json.loads(line) for line in text.splitlines()]


def assert_dense(events: list[dict]) -> None:
    """Ids are 1..n without a gap, and the last event is the only `end`."""
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["event"] for e in events].count("end") == 1
    assert events[-1]["event"] == "end"


# How often poll() and apoll() look again: the one place the tests wait on a clock, always
# under a deadline, for things that send no event (a file, a process list, another daemon).
POLL_STEP = 0.02


def poll(what: str, probe: Callable[[], Any], deadline: float = RUN_DEADLINE) -> Any:
    """Call probe until it returns something truthy; fail after deadline seconds."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        value = probe()
        if value:
            return value
        time.sleep(POLL_STEP)
    raise AssertionError(f"timed out after {deadline} s waiting for {what}")


async def apoll(
    what: str, probe: Callable[[], Awaitable[Any] | Any], deadline: float = RUN_DEADLINE
) -> Any:
    """poll() for async tests: probe may be a coroutine function; fail after deadline."""
    with anyio.move_on_after(deadline):
        while True:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await anyio.sleep(POLL_STEP)
    raise AssertionError(f"timed out after {deadline} s waiting for {what}")


def wait_terminal(target: Daemon | httpx.Client, run_id: str) -> dict[str, Any]:
    """Poll a run's status body until it is terminal."""

    def probe(http: httpx.Client) -> dict[str, Any] | None:
        body = http.get(f"/api/runs/{run_id}").json()
        return body if body["status"] in TERMINAL else None

    if isinstance(target, httpx.Client):
        return poll(f"run {run_id} to finish", lambda: probe(target))  # type: ignore[no-any-return]
    with target.client() as http:
        return poll(f"run {run_id} to finish", lambda: probe(http))  # type: ignore[no-any-return]


def parse_frames(text: str) -> list[dict[str, str]]:
    """The fields of each SSE frame in text that carries an id."""
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ": " not in line:
                continue
            key, value = line.split(": ", 1)
            fields[key] = value
        if "id" in fields:
            frames.append(fields)
    return frames


def write_script(tmp_path: Path, name: str, body: str) -> Path:
    """A small Python child script in tmp_path."""
    path = tmp_path / name
    path.write_text(body)
    return path


def process_alive(pid: int) -> bool:
    """True if pid is a live, non-zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def marked(run_id: str) -> list[int]:
    """Live processes whose environment carries the run's marker."""
    needle = f"OD_RUNS_RUN_ID={run_id}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes() and process_alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def stop_with_parent() -> None:
    """In a child before exec: SIGTERM it when the test process dies, however it dies.

    A test killed by its timeout skips its teardown; this keeps its daemon from living on.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def http_client(url: str, **options: Any) -> httpx.Client:
    """A client of a loopback daemon: no proxies from the environment, the shared TLS context."""
    options.setdefault("timeout", 30)
    return httpx.Client(base_url=url, trust_env=False, verify=LOOPBACK_TLS, **options)


class Daemon:
    """`od-runs serve` in a subprocess on a loopback port, with its own data dir."""

    def __init__(
        self, data_dir: Path, port: int | None = None, *extra: str, token: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra = extra
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "OD_RUNS_LOG_LEVEL": "warning"}
        # A daemon with a token: every request of this helper bears it.
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if token:
            self.env["OD_RUNS_TOKEN"] = token

    def start(self, grace: float = 2.0) -> Daemon:
        """Spawn the daemon and wait until it answers /api/health."""
        return self.spawn(grace).wait_healthy()

    def spawn(self, grace: float = 2.0) -> Daemon:
        """Start the subprocess without waiting for it (several daemons start side by side)."""
        self.log_path = self.data_dir.parent / f"daemon-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "od_runs",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--grace",
                    str(grace),
                    *self.extra,
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=stop_with_parent,
            )
        return self

    def wait_healthy(self) -> Daemon:
        """Wait until the spawned daemon answers /api/health; kill it if it never does."""
        assert self.proc is not None
        with self.client(timeout=1) as http:

            def healthy() -> bool:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}")
                try:
                    return http.get("/api/health").status_code == 200
                except httpx.TransportError:
                    return False

            try:
                poll("the daemon to answer /api/health", healthy, DAEMON_START_TIMEOUT)
            except AssertionError:
                self.proc.kill()
                raise RuntimeError("daemon did not become healthy") from None
        return self

    def stop(self) -> int:
        """SIGTERM and wait: the daemon's graceful shutdown."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """kill -9: a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def client(self, timeout: float = 30) -> httpx.Client:
        """An HTTP client of this daemon that ignores proxy settings."""
        return http_client(self.url, headers=self.headers, timeout=timeout)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/runs; the status body of the new run."""
        with self.client() as http:
            response = http.post("/api/runs", json=body)
        assert response.status_code == 202, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs_log"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for a whole test module, for tests that only need the defaults."""
    data_dir = tmp_path_factory.mktemp("shared") / "runs_log"
    data_dir.mkdir()
    daemon = Daemon(data_dir).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[Daemon]:
    """A running daemon on an ephemeral loopback port; stopped after the test."""
    d = Daemon(data_dir).start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                d.proc.kill()


# MCP clients ----------------------------------------------------------------------------


def stdio_params(url: str, *args: str) -> StdioServerParameters:
    """`python -m od_runs mcp ARGS` with OD_RUNS_URL pointing at url."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "od_runs", "mcp", *args],
        env={"OD_RUNS_URL": url, "OD_RUNS_LOG_LEVEL": "warning"},
    )


@asynccontextmanager
async def connect(
    daemon: Daemon, transport: str, mode: str = "auto", **client_options: Any
) -> AsyncIterator[Client]:
    """An initialised SDK client on the daemon's /mcp ("http") or via `od-runs mcp` ("stdio")."""
    target: str | StdioServerParameters = (
        f"{daemon.url}/mcp" if transport == "http" else stdio_params(daemon.url, "--no-spawn")
    )
    async with Client(target, mode=mode, **client_options) as client:
        yield client


async def call(client: Client, tool: str, args: dict[str, Any], **options: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, args, **options)
    assert not result.is_error, f"{tool} failed: {error_text(result)}"
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    """The text blocks of a tool result, joined."""
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


@pytest.fixture(autouse=True)
def pinned_clis_installed(request: pytest.FixtureRequest) -> None:
    """Fail, never skip, a test that drives a pinned agent CLI that is not installed.

    `make test` installs them (npm ci); a missing one is a broken setup, and a skip would
    turn it into a green run that tested nothing.
    """
    marker = request.node.get_closest_marker("needs_cli")
    if marker is None:
        return
    for name in marker.args:
        path = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / name
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make test`, whose `npm ci` installs it")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A PostgreSQL server of this pytest process's own (tests/pg.py), stopped at the end."""
    from tests.pg import PgServer

    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """The URL of a new, empty database on the test server."""
    return str(pg_server.new_database())
