"""The od-runs command line: serve, mcp, start, ls, get, cancel, tail, sessions, mcp-config."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
import httpx

from . import __version__
from .agents import agent_help, agent_ids
from .client import DaemonClient, DaemonUnavailable
from .config import CONVERSATION_LIMIT, DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, Settings
from .errors import Conflict, NotFound, OdRunsError
from .mcpconfig import (
    CLIENTS,
    SERVER_NAME,
    Client,
    ConfigError,
    config_path,
    server_spec,
    snippet,
)
from .mcpconfig import install as install_entry
from .models import (
    TERMINAL_STATES,
    DemoOptions,
    Event,
    RunCreate,
    RunStatus,
    SessionDetail,
    SessionStatus,
)
from .render import (
    EventPrinter,
    Printer,
    runs_table,
    session_event_line,
    session_line,
    sessions_table,
    status_line,
)

T = TypeVar("T")
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
# How long `od-runs mcp` waits for a daemon it started to answer /api/health.
DAEMON_START_TIMEOUT = 20.0
EXIT_CODES = {"succeeded": 0, "failed": 1, "canceled": 2}
# How often tail/--follow push buffered output (and batch many small events into one write).
FLUSH_INTERVAL = 0.1


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn our errors into one clean line instead of a traceback."""
    try:
        return anyio.run(fn)
    except OdRunsError as exc:
        raise click.ClickException(f"{exc.message} [{exc.code}]") from None


def _client(ctx: click.Context) -> DaemonClient:
    return DaemonClient(ctx.obj["url"], ctx.obj["token"])


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
URL_HELP = f"Daemon URL (env OD_RUNS_URL; default {DEFAULT_URL})."
TOKEN_HELP = "Bearer token (env OD_RUNS_TOKEN)."


def _override(key: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    """A callback that lets a subcommand's --url/--token replace the group's value."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(dict)[key] = value

    return callback


def again_after(*keys: str) -> Decorator:
    """--url and/or --token, accepted after the subcommand too (`od-runs ls --url U`).

    No env var and no default here: the group has read those already, and a default would
    overwrite a value given before the subcommand. Only a value typed here replaces it.
    """
    helps = {"url": URL_HELP, "token": TOKEN_HELP}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for key in reversed(keys):
            fn = click.option(
                f"--{key}",
                default=None,
                expose_value=False,
                allow_from_autoenv=False,
                callback=_override(key),
                help=helps[key],
            )(fn)
        return fn

    return decorate


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "OD_RUNS"}
)
@click.version_option(__version__, prog_name="od-runs")
@click.option(
    "--url",
    envvar="OD_RUNS_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Daemon URL for client commands (env OD_RUNS_URL); also accepted after the command.",
)
@click.option(
    "--token",
    envvar="OD_RUNS_TOKEN",
    default=None,
    help="Bearer token (env OD_RUNS_TOKEN); also accepted after the command.",
)
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """od-runs: run coding agents and watch them over MCP, SSE and JSONL logs.

    Start the daemon with `od-runs serve`, then start runs with `od-runs start`,
    follow them with `od-runs tail`, or let an MCP client drive them via `od-runs mcp`.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(url=url, token=token)


def data_dir_option(help_text: str) -> Decorator:
    """The --data-dir option (env OD_RUNS_DATA_DIR) with a help text for its command."""
    return click.option(
        "--data-dir",
        envvar="OD_RUNS_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
    )


@main.command()
@click.option(
    "--host",
    envvar="OD_RUNS_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on; a non-loopback address needs --token.",
)
@click.option(
    "--port",
    envvar="OD_RUNS_PORT",
    default=DEFAULT_PORT,
    show_default=True,
    type=int,
    help="TCP port to listen on.",
)
@data_dir_option("Where od-runs.sqlite3 and <run-id>/events.jsonl live.")
@click.option(
    "--grace",
    envvar="OD_RUNS_GRACE",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between SIGTERM and SIGKILL when a run is canceled or the daemon stops.",
)
@click.option(
    "--max-conversations",
    envvar="OD_RUNS_MAX_CONVERSATIONS",
    default=CONVERSATION_LIMIT,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Conversations whose runs may execute at once (runs of one conversation take turns).",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    help="Extra Host header value to accept (DNS-rebinding defence allows loopback only).",
)
@again_after("token")
@click.option(
    "--pass-env",
    "pass_env",
    multiple=True,
    metavar="NAME",
    help="Pass the daemon's variable NAME to every agent, its value scrubbed from all output "
    "(repeatable; also OD_RUNS_PASS_ENV=A,B).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    data_dir: Path,
    grace: float,
    max_conversations: int,
    allowed_hosts: tuple[str, ...],
    pass_env: tuple[str, ...],
) -> None:
    """Run the daemon (REST, SSE, MCP at /mcp) in the foreground."""
    import uvicorn

    from .agents.credentials import add_pass_env
    from .http_app import Server, create_app

    add_pass_env(pass_env)

    settings = Settings(
        host=host,
        port=port,
        data_dir=data_dir,
        token=ctx.obj["token"],
        grace=grace,
        max_conversations=max_conversations,
        allowed_hosts=list(allowed_hosts),
    )
    try:
        settings.check()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"od-runs {__version__} on {settings.base_url()} data in {data_dir.resolve()}", err=True
    )
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=os.environ.get("OD_RUNS_LOG_LEVEL", "warning"),
        timeout_graceful_shutdown=int(grace) + 5,
    )
    # A busy run allocates a few short-lived objects per event; at the default threshold
    # (700) the collector runs several times per batch and scans the batch each time.
    # Start-up objects are frozen out of its way.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    Server(config).run()


@main.command()
@data_dir_option("Data dir of the daemon this command starts if none answers.")
@click.option(
    "--no-spawn", is_flag=True, help="Fail instead of starting a daemon when none answers."
)
@click.option(
    "--idle-exit",
    "idle_exit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Exit after SECONDS with no MCP message, request in flight or subscribed run "
    "(env OD_RUNS_MCP_IDLE_EXIT; default: never). Closing stdin always exits.",
)
@again_after("url", "token")
@click.pass_context
def mcp(ctx: click.Context, data_dir: Path, no_spawn: bool, idle_exit: float | None) -> None:
    """Serve MCP over stdio, backed by the daemon at --url (started if needed).

    Stdout carries nothing but MCP messages; logs go to stderr.
    """
    from .mcp_server import run_stdio

    url, token = ctx.obj["url"], ctx.obj["token"]

    async def go() -> None:
        async with DaemonClient(url, token) as client:
            await _ensure_daemon(client, url, data_dir, token, spawn=not no_spawn)
            await run_stdio(client, idle_exit)

    _run(go)


async def _ensure_daemon(
    client: DaemonClient, url: str, data_dir: Path, token: str | None, *, spawn: bool
) -> None:
    """Make sure a daemon answers at url, starting one in the background if allowed."""
    try:
        await client.health()
        return
    except DaemonUnavailable:
        if not spawn:
            raise
    log_path = await anyio.to_thread.run_sync(_spawn_daemon, url, data_dir, token)
    with anyio.move_on_after(DAEMON_START_TIMEOUT):
        while True:
            try:
                await client.health()
                return
            except DaemonUnavailable:
                await anyio.sleep(0.1)
    raise DaemonUnavailable(
        f"started a daemon for {url} but it did not answer within {DAEMON_START_TIMEOUT:.0f}s; "
        f"see {log_path}"
    )


def _spawn_daemon(url: str, data_dir: Path, token: str | None) -> Path:
    """Start `od-runs serve` for url in its own session; its output goes to daemon.log."""
    parsed = httpx.URL(url)
    host, port = parsed.host or DEFAULT_HOST, parsed.port or DEFAULT_PORT
    data_dir = data_dir.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = data_dir / "daemon.log"
    argv = [sys.executable, "-m", "od_runs", "serve", "--host", host, "--port", str(port)]
    # The token the client will send guards the daemon too; by env, so `ps` never shows it.
    env = {**os.environ, "OD_RUNS_TOKEN": token} if token else None
    with open(log_path, "ab") as log_file:
        subprocess.Popen(
            [*argv, "--data-dir", str(data_dir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    return log_path


def _print_status(status: RunStatus, as_json: bool) -> None:
    if as_json:
        click.echo(status.model_dump_json(indent=2))
    else:
        click.echo(status_line(status))


@main.command()
@click.argument("args", nargs=-1)
@click.option(
    "--agent",
    "agent_id",
    type=click.Choice(agent_ids()),
    default="demo",
    show_default=True,
    help=f"Which agent runs ({agent_help()}).",
)
@click.option("--prompt", default=None, help="Prompt (for --agent command; demo takes ARGS).")
@click.option("--model", default=None, help="Model the agent should use (codex, claude).")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Fail AGENT_STALLED after this long without output (0: never; default: the agent's).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Fail AGENT_TIMEOUT after this long in total (default: no limit).",
)
@click.option("--project", "project_id", default=None, help="projectId of the run.")
@click.option("--conversation", "conversation_id", default=None, help="conversationId.")
@click.option("--cwd", default=None, help="Working directory of the agent.")
@click.option(
    "--env",
    "env_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra environment for the agent (repeatable).",
)
@click.option("--events", type=int, default=None, help="demo: how many events to emit.")
@click.option("--duration", type=float, default=None, help="demo: seconds to spread them over.")
@click.option("--fast", is_flag=True, help="demo: emit as fast as possible.")
@click.option("--request-id", default=None, help="clientRequestId, makes the create idempotent.")
@click.option("--follow", "-f", is_flag=True, help="Follow the run's events until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def start(
    ctx: click.Context,
    args: tuple[str, ...],
    agent_id: str,
    prompt: str | None,
    model: str | None,
    idle_timeout: float | None,
    timeout: float | None,
    project_id: str | None,
    conversation_id: str | None,
    cwd: str | None,
    env_pairs: tuple[str, ...],
    events: int | None,
    duration: float | None,
    fast: bool,
    request_id: str | None,
    follow: bool,
    as_json: bool,
) -> None:
    """Start a run: `od-runs start "fix the tests"` or `od-runs start --agent command -- ls -l`."""
    env: dict[str, str] = {}
    for pair in env_pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--env")
        env[name] = value
    demo: dict[str, Any] = {}
    if events is not None:
        demo["events"] = events
    if duration is not None:
        demo["durationSeconds"] = duration
    if fast:
        demo["fast"] = True
    fields: dict[str, Any] = {"agentId": agent_id, "env": env}
    if agent_id == "command":
        if not args:
            raise click.UsageError(
                "--agent command needs the command: od-runs start --agent command -- ARGV..."
            )
        fields.update(command=list(args), prompt=prompt or "")
    else:
        fields["prompt"] = prompt if prompt is not None else " ".join(args)
    for key, given in (
        ("projectId", project_id),
        ("conversationId", conversation_id),
        ("cwd", cwd),
        ("clientRequestId", request_id),
        ("model", model),
        ("idleTimeoutMs", None if idle_timeout is None else round(idle_timeout * 1000)),
        ("timeoutMs", None if timeout is None else max(1, round(timeout * 1000))),
    ):
        if given is not None:
            fields[key] = given
    if demo:
        fields["demo"] = DemoOptions(**demo)
    try:
        request = RunCreate(**fields)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    async def go() -> int:
        async with _client(ctx) as client:
            status = await client.start(request)
            if not follow:
                _print_status(status, as_json)
                return 0
            if not as_json:
                click.echo(f"{status.id}  log: {status.eventsLogPath}", err=True)
            return await _follow(client, status.id, 0, as_json)

    ctx.exit(_run(go))


def _printer(status: RunStatus, as_json: bool) -> Printer:
    """JSON lines, rich on a terminal, plain text otherwise."""
    if not as_json and sys.stdout.isatty():
        from .render_tty import TtyPrinter

        return TtyPrinter(status)
    return EventPrinter(sys.stdout, as_json=as_json)


async def _flush_every(printer: Printer, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        printer.flush()


async def _follow(client: DaemonClient, run_id: str, after: int, as_json: bool) -> int:
    printer = _printer(await client.get(run_id), as_json)
    last: Event | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_flush_every, printer, FLUSH_INTERVAL)
            async for event in client.stream(run_id, after):
                printer.print(event)
                last = event
            tg.cancel_scope.cancel()
    finally:
        printer.close()
    final = await client.get(run_id)
    if last is None or final.status not in TERMINAL_STATES:
        return 1
    return EXIT_CODES.get(final.status, 1)


@main.command("ls")
@click.option("--project", "project_id", default=None, help="Only runs of this projectId.")
@click.option(
    "--conversation", "conversation_id", default=None, help="Only runs of this conversationId."
)
@click.option(
    "--status",
    type=click.Choice(["queued", "running", "succeeded", "failed", "canceled", "active"]),
    default=None,
    help="Only runs in this status; active means queued or running.",
)
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many runs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def ls(
    ctx: click.Context,
    project_id: str | None,
    conversation_id: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first."""

    async def go() -> list[RunStatus]:
        async with _client(ctx) as client:
            return await client.list(project_id, conversation_id, status, limit)

    runs = _run(go)
    if as_json:
        click.echo(json.dumps({"runs": [r.model_dump(mode="json") for r in runs]}, indent=2))
    elif not runs:
        click.echo("no runs")
    elif sys.stdout.isatty():
        from rich.console import Console

        from .render_tty import runs_table as rich_runs_table

        Console(highlight=False).print(rich_runs_table(runs))
    else:
        click.echo(runs_table(runs))


async def _run_id_or_newest(client: DaemonClient, run_id: str | None) -> str:
    """The run asked for, or (none given) the newest run, named on stderr so nobody guesses."""
    if run_id is not None:
        return run_id
    newest = await client.list(limit=1)
    if not newest:
        raise NotFound("no runs yet: start one with `od-runs start`")
    click.echo(f"newest run: {newest[0].id}", err=True)
    return newest[0].id


@main.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="The full status body as JSON.")
@again_after("url", "token")
@click.pass_context
def get(ctx: click.Context, run_id: str | None, as_json: bool) -> None:
    """Show one run's status (without RUN_ID: the newest run's)."""

    async def go() -> RunStatus:
        async with _client(ctx) as client:
            return await client.get(await _run_id_or_newest(client, run_id))

    status = _run(go)
    if as_json:
        click.echo(status.model_dump_json(indent=2))
        return
    click.echo(status_line(status))
    if status.eventsLogPath:
        click.echo(f"  log: {status.eventsLogPath}")
    if status.errorCode:
        click.echo(f"  error: {status.errorCode}: {status.error}")


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def cancel(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Cancel a run; returns once its processes are gone."""

    async def go() -> RunStatus:
        async with _client(ctx) as client:
            return await client.cancel(run_id)

    _print_status(_run(go), as_json)


@main.command()
@click.argument("run_id", required=False)
@click.option("--after", type=int, default=0, show_default=True, help="Start after this event id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@again_after("url", "token")
@click.pass_context
def tail(ctx: click.Context, run_id: str | None, after: int, as_json: bool) -> None:
    """Follow a run's events until it ends (without RUN_ID: the newest run's); exit 0
    succeeded, 1 failed, 2 canceled."""

    async def go() -> int:
        async with _client(ctx) as client:
            return await _follow(client, await _run_id_or_newest(client, run_id), after, as_json)

    ctx.exit(_run(go))


@main.group()
@again_after("url", "token")
def sessions() -> None:
    """Agent sessions: one warm agent process per conversation (codex-app-server).

    Each run of a conversation is a turn on its session. List sessions, show one with its
    recent events, or retire one: its process stops, and the conversation's next run
    resumes the same thread in a new process.
    """


@sessions.command("ls")
@click.option(
    "--conversation", "conversation_id", default=None, help="Only sessions of this conversationId."
)
@click.option(
    "--status",
    type=click.Choice(["active", "idle", "retired"]),
    default=None,
    help="Only sessions in this status: active (a turn runs), idle (process waiting), retired.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="At most this many sessions.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def sessions_ls(
    ctx: click.Context, conversation_id: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List sessions, most recently updated first."""

    async def go() -> list[SessionStatus]:
        async with _client(ctx) as client:
            return await client.list_sessions(conversation_id, status, limit)

    found = _run(go)
    if as_json:
        click.echo(json.dumps({"sessions": [s.model_dump(mode="json") for s in found]}, indent=2))
    elif not found:
        click.echo("no sessions")
    elif sys.stdout.isatty():
        from rich.console import Console

        from .render_tty import sessions_table as rich_sessions_table

        Console(highlight=False).print(rich_sessions_table(found))
    else:
        click.echo(sessions_table(found))


@sessions.command("get")
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="The full session body as JSON.")
@again_after("url", "token")
@click.pass_context
def sessions_get(ctx: click.Context, session_id: str, as_json: bool) -> None:
    """Show one session and its recent events (spawned, thread, turns, retirements)."""

    async def go() -> SessionDetail:
        async with _client(ctx) as client:
            return await client.get_session(session_id)

    detail = _run(go)
    if as_json:
        click.echo(detail.model_dump_json(indent=2))
        return
    click.echo(session_line(detail))
    if detail.lastRunId:
        click.echo(f"  last run: {detail.lastRunId} ({detail.lastTurnStatus or 'running'})")
    for event in detail.recentEvents:
        click.echo(f"  {session_event_line(event)}")
    if not detail.recentEvents:
        click.echo("  no recent events")


@sessions.command("retire")
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="The retired session's body as JSON.")
@again_after("url", "token")
@click.pass_context
def sessions_retire(ctx: click.Context, session_id: str, as_json: bool) -> None:
    """Retire a session: stop its process now (refused while a run is using it).

    The conversation keeps its thread: its next run starts a new process that resumes it.
    """

    async def go() -> SessionDetail:
        async with _client(ctx) as client:
            before = await client.get_session(session_id)
            if before.status == "retired":
                # The daemon treats this as a no-op; a person asking for it likely has the
                # wrong id, so say so instead of printing an unchanged session.
                raise Conflict(
                    f"session {session_id} is already retired ({before.retiredReason or '-'})",
                    code="ALREADY_RETIRED",
                )
            return await client.retire_session(session_id)

    detail = _run(go)
    if as_json:
        click.echo(detail.model_dump_json(indent=2))
    else:
        click.echo(session_line(detail))


@main.command("mcp-config")
@click.argument("client", type=click.Choice(CLIENTS))
@click.option(
    "--http",
    "use_http",
    is_flag=True,
    help="Streamable HTTP form (<url>/mcp of the daemon) instead of stdio.",
)
@data_dir_option("Data dir pinned (as an absolute path) in the stdio form.")
@click.option("--name", default=SERVER_NAME, show_default=True, help="Server name in the config.")
@click.option(
    "--install",
    is_flag=True,
    help="Write it into the client's config file (backed up first, the rest kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def mcp_config(
    ctx: click.Context,
    client: Client,
    use_http: bool,
    data_dir: Path,
    name: str,
    install: bool,
    as_json: bool,
) -> None:
    """Print (or --install) the MCP server entry for codex, cursor, zed, claude or vscode."""
    spec = server_spec(
        url=ctx.obj["url"],
        default_url=DEFAULT_URL,
        data_dir=data_dir,
        token=ctx.obj["token"],
        http=use_http,
    )
    path = config_path(client, os.environ, Path.cwd())
    snip = snippet(client, spec, name=name, path=path)
    result = None
    if install:
        try:
            result = install_entry(client, snip, path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        body = snip.model_dump(mode="json")
        body["install"] = result.model_dump(mode="json") if result else None
        click.echo(json.dumps(body, indent=2))
    elif result is None:
        where = "run" if client == "claude" else f"add to {path}:"
        click.echo(f"# {client}: {where}", err=True)
        click.echo(snip.text, nl=False)
    elif result.changed:
        backup = f" (backup: {result.backupPath})" if result.backupPath else ""
        click.echo(f"installed {name} into {path}{backup}")
    else:
        click.echo(f"{name} is already installed in {path}; nothing changed")
    if ctx.obj["token"] and not as_json:
        click.echo("note: this entry contains your token", err=True)
