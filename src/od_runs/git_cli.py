"""git for workspaces.py: run it off the event loop, bounded, and read a worktree's changes
through a throw-away index so the agent's own index is never touched (invariant 13)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from .models import FileChange

# git must never wait for a terminal (credentials, an editor) nor read the user's pager.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_EDITOR": "true"}


class WorkspaceError(Exception):
    """A git step of preparing or reading a worktree failed; the message says which."""


async def git(
    *args: str, cwd: str | Path, env: dict[str, str] | None = None, check: bool = True
) -> tuple[int, str, str]:
    """Run git off the event loop; (returncode, stdout, stderr), WorkspaceError on failure."""
    full_env = {**os.environ, **_GIT_ENV, **(env or {})}
    try:
        done = await anyio.run_process(
            ["git", *args], cwd=str(cwd), env=full_env, check=False, stdin=None
        )
    except FileNotFoundError as exc:
        raise WorkspaceError("git is not installed (no `git` on PATH)") from exc
    out = done.stdout.decode("utf-8", "replace")
    err = done.stderr.decode("utf-8", "replace").strip()
    if check and done.returncode != 0:
        raise WorkspaceError(f"git {args[0]} failed: {err or f'exit {done.returncode}'}")
    return done.returncode, out, err


async def git_bounded(
    *args: str, cwd: str | Path, env: dict[str, str], limit: int
) -> tuple[bytes, bool]:
    """At most `limit` bytes of git's stdout, and whether there was more (git is stopped)."""
    full_env = {**os.environ, **_GIT_ENV, **env}
    chunks: list[bytes] = []
    size = 0
    more = False
    async with await anyio.open_process(
        ["git", *args], cwd=str(cwd), env=full_env, stdin=None, stderr=None
    ) as process:
        assert process.stdout is not None
        try:
            async for chunk in process.stdout:
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    more = True
                    break
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
    return b"".join(chunks)[:limit], more


@asynccontextmanager
async def snapshot_index(worktree: Path) -> AsyncIterator[dict[str, str]]:
    """A throw-away copy of a worktree's index with every file added: the diff's source.

    Untracked files count as changes, yet `git add` on the real index would change what the
    agent staged. The copy lives and dies here; only git's object store gains blobs.
    """
    _, real, _ = await git(
        "rev-parse", "--path-format=absolute", "--git-path", "index", cwd=worktree
    )  # fmt: skip
    tmp = await anyio.to_thread.run_sync(tempfile.mkdtemp, "", "od-runs-index-")
    try:
        copy = str(Path(tmp) / "index")
        if await anyio.Path(real.strip()).exists():
            await anyio.to_thread.run_sync(shutil.copyfile, real.strip(), copy)
        env = {"GIT_INDEX_FILE": copy}
        await git("add", "-A", "--", ".", cwd=worktree, env=env)
        yield env
    finally:
        await anyio.to_thread.run_sync(shutil.rmtree, tmp, True)


def parse_numstat(text: str) -> list[FileChange]:
    """`git diff --numstat -z` records: "ins\\tdel\\tpath\\0"; binary files show "-"."""
    files: list[FileChange] = []
    for record in text.split("\0"):
        if not record:
            continue
        ins, _, rest = record.partition("\t")
        dels, _, path = rest.partition("\t")
        files.append(
            FileChange(
                path=path,
                insertions=int(ins) if ins.isdigit() else None,
                deletions=int(dels) if dels.isdigit() else None,
            )
        )
    return files


__all__ = ["WorkspaceError", "git", "git_bounded", "parse_numstat", "snapshot_index"]
