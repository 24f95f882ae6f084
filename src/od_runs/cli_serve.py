"""`od-runs serve` (the daemon) and `od-runs mcp` (MCP over stdio, starting a daemon if needed)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import anyio
import click

from . import __version__
from .cli_group import again_after, data_dir_option, main, run_async
from .client import DaemonClient
from .config import (
    CONVERSATION_LIMIT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LEASE_SECONDS,
    MCP_DAEMON_IDLE_EXIT,
    Settings,
    user_data_dir,
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
    "--database-url",
    envvar="OD_RUNS_DATABASE_URL",
    default=None,
    metavar="URL",
    help="postgresql://... : keep runs, sessions and events in PostgreSQL (the postgres "
    "extra) instead of od-runs.sqlite3; the data dir keeps the local events.jsonl files.",
)
@click.option(
    "--worker-id",
    envvar="OD_RUNS_WORKER_ID",
    default=None,
    metavar="ID",
    help="With --database-url: this daemon's stable name among the others (default: from "
    "the host name and the data dir).",
)
@click.option(
    "--lease-seconds",
    envvar="OD_RUNS_LEASE_SECONDS",
    default=LEASE_SECONDS,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="With --database-url: a daemon that has not heartbeaten for this long is lost; "
    "another daemon ends its runs as failed (WORKER_LOST).",
)
@click.option(
    "--max-runs",
    envvar="OD_RUNS_MAX_RUNS",
    default=None,
    type=click.IntRange(1, 100_000),
    help="With --database-url: runs this daemon executes at once; it leaves the rest queued "
    "for the other daemons (default: no cap).",
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
    "--retain",
    envvar="OD_RUNS_RETAIN",
    default=None,
    metavar="AGE",
    help="Delete finished runs once they ended longer ago than AGE (30d, 12h); default: never.",
)
@click.option(
    "--min-free",
    "min_free",
    envvar="OD_RUNS_MIN_FREE",
    default="1G",
    show_default=True,
    metavar="SIZE",
    help="Refuse new runs (507) while the data dir's filesystem has less free (0: no floor).",
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
@click.option(
    "--idle-exit",
    "idle_exit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop after SECONDS with no active run and no request (env "
    "OD_RUNS_SERVE_IDLE_EXIT; default: never; `od-runs mcp` sets it for a daemon it starts).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    worker_id: str | None,
    lease_seconds: float,
    max_runs: int | None,
    grace: float,
    max_conversations: int,
    retain: str | None,
    min_free: str,
    allowed_hosts: tuple[str, ...],
    pass_env: tuple[str, ...],
    idle_exit: float | None,
) -> None:
    """Run the daemon (REST, SSE, MCP at /mcp) in the foreground."""
    import uvicorn

    from .agents.credentials import add_pass_env
    from .http_app import Server, create_app

    add_pass_env(pass_env)
    retain_seconds, min_free_bytes = _disk_options(retain, min_free)

    settings = Settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url or None,
        worker_id=worker_id or None,
        lease_seconds=lease_seconds,
        max_runs=max_runs,
        token=ctx.obj["token"],
        grace=grace,
        max_conversations=max_conversations,
        retain=retain_seconds,
        min_free=min_free_bytes,
        allowed_hosts=list(allowed_hosts),
        idle_exit=idle_exit,
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


def _disk_options(retain: str | None, min_free: str) -> tuple[float | None, int]:
    """--retain in seconds (None: keep forever) and --min-free in bytes, or a usage error."""
    from .errors import OdRunsError
    from .retention_models import parse_duration, parse_size

    try:
        seconds = parse_duration(retain) if retain else None
    except OdRunsError as exc:
        raise click.BadParameter(exc.message, param_hint="--retain") from None
    if seconds is not None and seconds <= 0:
        raise click.BadParameter(
            "must be longer than 0 (leave it out to keep runs)", param_hint="--retain"
        )
    try:
        floor = parse_size(min_free)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--min-free") from None
    return seconds, floor


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
@data_dir_option(
    "Data dir of the daemon this command starts if none answers.",
    default=None,
    shown="$XDG_DATA_HOME/od-runs, else ~/.local/share/od-runs",
)
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
@click.option(
    "--daemon-idle-exit",
    "daemon_idle_exit",
    type=click.FloatRange(min=0),
    default=MCP_DAEMON_IDLE_EXIT,
    show_default=True,
    metavar="SECONDS",
    help="`serve --idle-exit` of a daemon this command starts (env "
    "OD_RUNS_MCP_DAEMON_IDLE_EXIT; 0: it never stops by itself).",
)
@again_after("url", "token")
@click.pass_context
def mcp(
    ctx: click.Context,
    data_dir: Path | None,
    no_spawn: bool,
    idle_exit: float | None,
    daemon_idle_exit: float,
) -> None:
    """Serve MCP over stdio, backed by the daemon at --url (started on first use).

    Listing tools, resources and prompts starts nothing; the first tool call or resource
    read reaches the daemon, starting one if none answers. Stdout carries nothing but MCP
    messages; logs go to stderr.
    """
    from .mcp_daemon import LazyDaemon, SpawnPlan
    from .mcp_server import run_stdio

    url, token = ctx.obj["url"], ctx.obj["token"]
    plan = SpawnPlan(
        url=url,
        data_dir=data_dir if data_dir is not None else user_data_dir(),
        token=token,
        idle_exit=daemon_idle_exit or None,
    )

    async def go() -> None:
        async with DaemonClient(url, token) as client:
            await run_stdio(LazyDaemon(client, None if no_spawn else plan), idle_exit)

    run_async(go)
