"""Disk commands: `od-runs rm RUN_ID…` and `od-runs prune --older-than 30d`."""

from __future__ import annotations

import click

from .cli_group import again_after, daemon_client, main, run_async
from .errors import OdRunsError
from .retention_models import PruneRequest, PruneResult, format_bytes, parse_duration


@main.command("rm")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID…")
@click.option("--force", is_flag=True, help="Also remove a worktree with uncommitted changes.")
@again_after("url", "token")
@click.pass_context
def rm(ctx: click.Context, run_ids: tuple[str, ...], force: bool) -> None:
    """Delete finished runs: their rows, event logs and directories (active ones: cancel first)."""

    async def go() -> int:
        failed = 0
        total = 0
        async with daemon_client(ctx) as client:
            for run_id in run_ids:
                try:
                    result = await client.delete(run_id, force=force)
                except OdRunsError as exc:
                    # One refusal (still running, unknown id) must not stop the others.
                    click.echo(f"{run_id}: not removed: {exc.message} [{exc.code}]", err=True)
                    failed += 1
                    continue
                total += result.bytes
                click.echo(f"removed {result.id} ({format_bytes(result.bytes)})")
        if len(run_ids) > 1:
            removed = len(run_ids) - failed
            click.echo(f"removed {removed} of {len(run_ids)} runs, {format_bytes(total)}")
        return 1 if failed else 0

    ctx.exit(run_async(go))


@main.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Runs that ended longer ago than AGE: 30d, 12h, 90m, 45s, 2w.",
)
@click.option(
    "--status",
    type=click.Choice(["succeeded", "failed", "canceled"]),
    default=None,
    help="Only runs that ended in this status.",
)
@click.option("--project", "project_id", default=None, help="Only runs of this projectId.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def prune(
    ctx: click.Context,
    older_than: str,
    status: str | None,
    project_id: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Delete finished runs by the age of their end; never active runs, nor runs whose
    conversation has a live session."""
    try:
        parse_duration(older_than)
    except OdRunsError as exc:
        raise click.BadParameter(exc.message, param_hint="--older-than") from None
    request = PruneRequest(
        olderThan=older_than,
        status=status,  # type: ignore[arg-type]  # click.Choice checked it is one of those
        projectId=project_id,
        dryRun=dry_run,
    )

    async def go() -> PruneResult:
        async with daemon_client(ctx) as client:
            return await client.prune(request)

    result = run_async(go)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    verb = "would remove" if result.dryRun else "removed"
    for run_id in result.runs:
        click.echo(f"{verb} {run_id}")
    click.echo(f"{verb} {result.count} runs, {format_bytes(result.bytes)}")
