"""Run commands: `od-runs start`, `ls`, `get`, `cancel` and `tail`."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import click

from .agents import agent_help, agent_ids
from .cli_group import again_after, daemon_client, main, run_async
from .client import DaemonClient
from .errors import NotFound
from .models import TERMINAL_STATES, DemoOptions, Event, RunCreate, RunStatus
from .render import EventPrinter, Printer, runs_table, status_line

EXIT_CODES = {"succeeded": 0, "failed": 1, "canceled": 2}
# How often tail/--follow push buffered output (and batch many small events into one write).
FLUSH_INTERVAL = 0.1


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
@click.option(
    "--cwd", default=None, help="Working directory of the agent (with --worktree: inside it)."
)
@click.option(
    "--worktree",
    "worktree_repo",
    default=None,
    metavar="REPO",
    help="Run in a new git worktree of REPO on branch od-runs/<run-id> (see `worktrees`).",
)
@click.option("--base", default=None, metavar="REF", help="--worktree: start from REF (HEAD).")
@click.option(
    "--keep",
    type=click.Choice(["always", "changed", "never"]),
    default=None,
    help="--worktree: keep the worktree after the run always, if changed (default), never.",
)
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
    worktree_repo: str | None,
    base: str | None,
    keep: str | None,
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
    if worktree_repo is not None:
        workspace: dict[str, str] = {"mode": "worktree", "repo": os.path.abspath(worktree_repo)}
        workspace.update({k: v for k, v in (("base", base), ("keep", keep)) if v is not None})
        fields["workspace"] = workspace
    elif base is not None or keep is not None:
        raise click.UsageError("--base and --keep go with --worktree REPO")
    try:
        request = RunCreate(**fields)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    async def go() -> int:
        async with daemon_client(ctx) as client:
            status = await client.start(request)
            if not follow:
                _print_status(status, as_json)
                return 0
            if not as_json:
                click.echo(f"{status.id}  log: {status.eventsLogPath}", err=True)
            return await _follow(client, status.id, 0, as_json)

    ctx.exit(run_async(go))


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
        async with daemon_client(ctx) as client:
            return await client.list(project_id, conversation_id, status, limit)

    runs = run_async(go)
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
        async with daemon_client(ctx) as client:
            return await client.get(await _run_id_or_newest(client, run_id))

    status = run_async(go)
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
        async with daemon_client(ctx) as client:
            return await client.cancel(run_id)

    _print_status(run_async(go), as_json)


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
        async with daemon_client(ctx) as client:
            return await _follow(client, await _run_id_or_newest(client, run_id), after, as_json)

    ctx.exit(run_async(go))
