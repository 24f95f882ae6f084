"""`od-runs serve` (the daemon) and `od-runs mcp` (MCP over stdio, starting a daemon if needed)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import anyio
import click
import httpx

from . import __version__
from .cli_group import again_after, data_dir_option, main, run_async
from .client import DaemonClient, DaemonUnavailable
from .config import CONVERSATION_LIMIT, DEFAULT_HOST, DEFAULT_PORT, Settings

# How long `od-runs mcp` waits for a daemon it started to answer /api/health.
DAEMON_START_TIMEOUT = 20.0


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
    "--database-url",
    envvar="OD_RUNS_DATABASE_URL",
    default=None,
    metavar="URL",
    help="postgresql://... : keep runs, sessions and events in PostgreSQL (the postgres "
    "extra) instead of od-runs.sqlite3; the data dir keeps the local events.jsonl files.",
)
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
    database_url: str | None,
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
        database_url=database_url or None,
        token=ctx.obj["token"],
        grace=grace,
        max_conversations=max_conversations,
        allowed_hosts=list(allowed_hosts),
    )
    try:
        settings.check()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    where = f"data in {data_dir.resolve()}"
    if settings.database_url is not None:
        where = _check_database(settings.database_url) + f", local logs in {data_dir.resolve()}"
    click.echo(f"od-runs {__version__} on {settings.base_url()} {where}", err=True)
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


def _check_database(url: str) -> str:
    """Reach and migrate the database before serving, or fail with one line; says where."""
    try:
        from .pg_store import DatabaseUnavailable, migrate, redact_url
    except ImportError as exc:
        raise click.ClickException(
            f"--database-url needs the postgres extra: pip install 'od-runs[postgres]' ({exc})"
        ) from None
    try:
        anyio.run(migrate, url)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    return f"database {redact_url(url)}"


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

    run_async(go)


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
