"""`od-runs worktrees`: list, remove and prune the git worktrees of worktree runs."""

from __future__ import annotations

import json

import click

from .cli_group import again_after, daemon_client, main, run_async
from .models import WorktreeEntry


def _line(entry: WorktreeEntry) -> str:
    """One worktree on one line: id, state, branch, repo, path."""
    if not entry.exists:
        state = "gone"
    elif entry.inUse:
        state = "in use"
    elif entry.dirty:
        state = "dirty"
    elif entry.headCommit and entry.headCommit != entry.baseCommit:
        state = "commits"
    else:
        state = "clean"
    return f"{entry.id}  {state:<7} {entry.branch}  {entry.repo}  {entry.path}"


def _emit(found: list[WorktreeEntry], as_json: bool, empty: str) -> None:
    if as_json:
        click.echo(json.dumps({"worktrees": [e.model_dump(mode="json") for e in found]}, indent=2))
    elif not found:
        click.echo(empty)
    else:
        for entry in found:
            click.echo(_line(entry))


@main.group()
@again_after("url", "token")
def worktrees() -> None:
    """Git worktrees of worktree runs (`od-runs start --worktree REPO`).

    Each lives under the daemon's data dir on a branch od-runs/<run-id> (or the
    conversation's). od-runs never commits, pushes or merges: review a worktree's branch in
    its repository, then remove the worktree here.
    """


@worktrees.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def worktrees_ls(ctx: click.Context, as_json: bool) -> None:
    """List worktrees: clean, dirty (uncommitted changes), commits, in use, or gone."""

    async def go() -> list[WorktreeEntry]:
        async with daemon_client(ctx) as client:
            return await client.list_worktrees()

    _emit(run_async(go), as_json, "no worktrees")


@worktrees.command("rm")
@click.argument("worktree_id")
@click.option("--force", is_flag=True, help="Remove it even with uncommitted changes (lost).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def worktrees_rm(ctx: click.Context, worktree_id: str, force: bool, as_json: bool) -> None:
    """Remove one worktree; its branch stays when it has commits."""

    async def go() -> WorktreeEntry:
        async with daemon_client(ctx) as client:
            return await client.remove_worktree(worktree_id, force)

    entry = run_async(go)
    if as_json:
        click.echo(entry.model_dump_json(indent=2))
    else:
        click.echo(f"removed {entry.id} ({entry.path})")


@worktrees.command("prune")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def worktrees_prune(ctx: click.Context, as_json: bool) -> None:
    """Remove every idle worktree without changes, and git's stale worktree entries."""

    async def go() -> list[WorktreeEntry]:
        async with daemon_client(ctx) as client:
            return await client.prune_worktrees()

    _emit(run_async(go), as_json, "nothing to prune")


__all__ = ["worktrees"]
