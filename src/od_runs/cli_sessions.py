"""`od-runs sessions`: list, show and retire agent sessions."""

from __future__ import annotations

import json
import sys

import click

from .cli_group import again_after, daemon_client, main, run_async
from .errors import Conflict
from .models import SessionDetail, SessionStatus
from .render import session_event_line, session_line, sessions_table


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
        async with daemon_client(ctx) as client:
            return await client.list_sessions(conversation_id, status, limit)

    found = run_async(go)
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
        async with daemon_client(ctx) as client:
            return await client.get_session(session_id)

    detail = run_async(go)
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
        async with daemon_client(ctx) as client:
            before = await client.get_session(session_id)
            if before.status == "retired":
                # The daemon treats this as a no-op; a person asking for it likely has the
                # wrong id, so say so instead of printing an unchanged session.
                raise Conflict(
                    f"session {session_id} is already retired ({before.retiredReason or '-'})",
                    code="ALREADY_RETIRED",
                )
            return await client.retire_session(session_id)

    detail = run_async(go)
    if as_json:
        click.echo(detail.model_dump_json(indent=2))
    else:
        click.echo(session_line(detail))
