"""Workspaces: a git worktree per run (or per conversation) under the daemon's data dir.

Invariant 13: a worktree run changes only its worktree. Every git command here runs either
inside a worktree od-runs created, or against the user's repository with commands that only
read it or add/remove worktrees and `od-runs/*` branches; none touches the user's HEAD, index
or working tree. od-runs never commits, pushes or merges. What changed is read through a
throw-away index file, so even the worktree's own index stays the agent's.

Each worktree has a metadata file `<data-dir>/worktrees/<id>.json` next to its directory
`<data-dir>/worktrees/<id>/`; that file is how `ls`, `rm` and `prune` know them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio

from .encoding import now_iso
from .errors import Conflict, Invalid, NotFound
from .git_cli import WorkspaceError, git, git_bounded, parse_numstat, snapshot_index
from .models import (
    RunCreate,
    WorkspaceInfo,
    WorkspaceKeep,
    WorktreeEntry,
)

log = logging.getLogger("od_runs.workspaces")

# Files a `changes` event lists; the rest are counted in `truncated`.
MAX_FILES = 200
# Bytes of diff GET /api/runs/{id}/diff returns at most per page.
MAX_DIFF_BYTES = 1 << 20
BRANCH_PREFIX = "od-runs/"
DIR_NAME = "worktrees"


def _safe(name: str) -> str:
    """A conversation id as a branch and directory name component."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-") or "x"


def workspace_id(conversation_id: str | None, run_id: str) -> str:
    """The worktree's id: the run's own, or one per conversation."""
    if conversation_id is None:
        return run_id
    safe = _safe(conversation_id)
    if safe != conversation_id:
        # Two ids that differ only in characters `_safe` replaces must not share a worktree.
        safe += "-" + hashlib.sha256(conversation_id.encode()).hexdigest()[:8]
    return f"conv-{safe}"


# Whether a run still exists in the run store (start-up reconciliation).
RunExists = Callable[[str], Awaitable[bool]]


@dataclass
class Plan:
    """Where a run's worktree is (or will be), what it is made from, and what to keep."""

    id: str
    repo: str
    path: str
    branch: str
    base: str
    base_commit: str
    keep: WorkspaceKeep
    conversation_id: str | None
    created_at: str = ""
    run_ids: list[str] = field(default_factory=list)

    def cwd(self, relative: str | None) -> str:
        """The agent's cwd: `relative` inside the worktree (Invalid if it would leave it)."""
        if relative is not None and os.path.isabs(relative):
            raise Invalid(f"with a workspace, cwd must be relative to the worktree: {relative}")
        joined = os.path.normpath(os.path.join(self.path, relative or "."))
        if joined != self.path and not joined.startswith(self.path + os.sep):
            raise Invalid(f"cwd leaves the worktree: {relative}")
        return joined

    def info(self) -> WorkspaceInfo:
        """What the status body shows before the run has ended."""
        return WorkspaceInfo(
            id=self.id,
            path=self.path,
            repo=self.repo,
            branch=self.branch,
            baseCommit=self.base_commit,
            keep=self.keep,
        )


class Workspaces:
    """Creates, reads and removes the worktrees of runs; none without a data dir."""

    def __init__(self, data_dir: Path | None) -> None:
        self.root = data_dir / DIR_NAME if data_dir is not None else None
        # One git mutation at a time per repository: worktree add/remove take repo locks.
        self._locks: dict[str, anyio.Lock] = {}

    def _lock(self, repo: str) -> anyio.Lock:
        return self._locks.setdefault(repo, anyio.Lock())

    # Create time: check the request, plan the worktree -----------------------------------

    async def plan(self, request: RunCreate, run_id: str) -> Plan:
        """Check a run's workspace request (Invalid, a 422, with one sentence) and plan it."""
        spec = request.workspace
        assert spec is not None
        if self.root is None:
            raise Invalid(
                "worktree runs need a daemon with a data dir (od-runs serve --data-dir DIR); "
                "this one keeps nothing on disk"
            )
        repo_path = Path(spec.repo)
        if not repo_path.is_absolute():  # relative to what? the daemon's cwd is no answer
            raise Invalid(f"workspace.repo must be an absolute path: {spec.repo}")
        if not await anyio.Path(repo_path).exists():
            raise Invalid(f"workspace.repo does not exist: {spec.repo}")
        if not await anyio.Path(repo_path).is_dir():
            raise Invalid(f"workspace.repo is not a directory: {spec.repo}")
        code, out, _ = await git("rev-parse", "--is-bare-repository", cwd=repo_path, check=False)
        if code != 0:
            raise Invalid(f"workspace.repo is not a git repository: {spec.repo}")
        if out.strip() == "true":
            raise Invalid(
                f"workspace.repo is a bare repository (no working tree to branch from): {spec.repo}"
            )
        _, top, _ = await git("rev-parse", "--show-toplevel", cwd=repo_path)
        repo = top.strip()
        if self._inside(Path(repo)):
            raise Invalid(f"workspace.repo is one of od-runs' own worktrees: {spec.repo}")
        code, commit, _ = await git(
            "rev-parse", "--verify", "--quiet", f"{spec.base}^{{commit}}", cwd=repo, check=False
        )
        if code != 0:
            raise Invalid(f"workspace.base is not a commit in {repo}: {spec.base}")
        ws_id = workspace_id(request.conversationId, run_id)
        known = await self._read_meta(ws_id)
        if known is not None:
            if known.repo != repo:
                raise Invalid(
                    f"conversation {request.conversationId} already works in a worktree of "
                    f"{known.repo}, not {repo}"
                )
            return known  # the conversation continues where it is, on its own branch and base
        branch = BRANCH_PREFIX + ws_id.removeprefix("conv-")
        assert self.root is not None
        return Plan(
            id=ws_id,
            repo=repo,
            path=str(self.root / ws_id),
            branch=branch,
            base=spec.base,
            base_commit=commit.strip(),
            keep=spec.keep,
            conversation_id=request.conversationId,
        )

    def _inside(self, path: Path) -> bool:
        return self.root is not None and path.resolve().is_relative_to(self.root.resolve())

    # Before the agent: make the worktree exist ------------------------------------------

    async def prepare(self, plan: Plan, run_id: str) -> None:
        """Create the plan's worktree (or reuse the conversation's) and record the run."""
        assert self.root is not None
        await anyio.Path(self.root).mkdir(parents=True, exist_ok=True, mode=0o700)
        async with self._lock(plan.repo):
            if not await anyio.Path(plan.path, ".git").exists():
                await git("worktree", "prune", cwd=plan.repo, check=False)
                code, _, _ = await git(
                    "rev-parse", "--verify", "--quiet", f"refs/heads/{plan.branch}",
                    cwd=plan.repo, check=False,
                )  # fmt: skip
                if code == 0:
                    # The branch outlived its worktree (it has commits): continue on it.
                    await git("worktree", "add", plan.path, plan.branch, cwd=plan.repo)
                else:
                    await git(
                        "worktree", "add", "-b", plan.branch, plan.path, plan.base_commit,
                        cwd=plan.repo,
                    )  # fmt: skip
            if not plan.created_at:
                plan.created_at = now_iso()
            plan.run_ids = [*plan.run_ids[-19:], run_id]
            await self._write_meta(plan)

    # After the agent: what changed --------------------------------------------------------

    async def summarize(self, plan: Plan) -> WorkspaceInfo:
        """Path, branch, base and head commits, dirty, and the files changed vs base."""
        info = plan.info()
        path = Path(plan.path)
        if not await anyio.Path(path, ".git").exists():
            info.removed = True
            return info
        _, head, _ = await git("rev-parse", "HEAD", cwd=path)
        info.headCommit = head.strip()
        _, status, _ = await git("status", "--porcelain", "--untracked-files=all", cwd=path)
        info.dirty = bool(status.strip())
        async with snapshot_index(path) as env:
            _, numstat, _ = await git(
                "diff", "--cached", "--numstat", "-z", "--no-renames", plan.base_commit,
                cwd=path, env=env,
            )  # fmt: skip
        files = parse_numstat(numstat)
        info.files = files[:MAX_FILES]
        info.truncated = max(0, len(files) - MAX_FILES)
        return info

    async def conclude(self, plan: Plan, info: WorkspaceInfo, in_use: bool) -> WorkspaceInfo:
        """Apply the keep policy once nobody else needs the worktree; the info says if removed."""
        if in_use or info.removed or plan.keep == "always":
            return info
        committed = info.headCommit is not None and info.headCommit != plan.base_commit
        changed = bool(info.dirty) or committed or bool(info.files)
        if plan.keep == "changed" and changed:
            return info
        if info.dirty:  # "never" still never deletes uncommitted work
            return info
        await self._remove(plan, drop_branch=not committed)
        info.removed = True
        return info

    async def diff(
        self, info: WorkspaceInfo, path: str | None, offset: int, max_bytes: int
    ) -> tuple[str, int, bool]:
        """A page of the unified diff vs base: (text, next offset, more after it)."""
        limit = offset + max_bytes
        pathspec = ["--", path] if path else []
        where = Path(info.path)
        if await anyio.Path(where, ".git").exists():
            async with snapshot_index(where) as env:
                raw, more = await git_bounded(
                    "diff", "--cached", "--no-color", "--no-ext-diff", "--binary",
                    info.baseCommit, *pathspec, cwd=where, env=env, limit=limit,
                )  # fmt: skip
        else:
            code, _, _ = await git(
                "rev-parse", "--verify", "--quiet", f"refs/heads/{info.branch}",
                cwd=info.repo, check=False,
            )  # fmt: skip
            if code != 0:
                return "", offset, False
            raw, more = await git_bounded(
                "diff", "--no-color", "--no-ext-diff", "--binary",
                info.baseCommit, f"refs/heads/{info.branch}", *pathspec,
                cwd=info.repo, env={}, limit=limit,
            )  # fmt: skip
        page = raw[offset:]
        if more:
            # End a cut page on a line boundary so no character is split between pages.
            cut = page.rfind(b"\n")
            if cut >= 0:
                page = page[: cut + 1]
        return page.decode("utf-8", "replace"), offset + len(page), more

    # ls, rm, prune, start-up -------------------------------------------------------------

    async def entries(self, active: set[str]) -> list[WorktreeEntry]:
        """Every worktree od-runs knows, with whether it has uncommitted or committed changes."""
        found: list[WorktreeEntry] = []
        for plan in await self._all_meta():
            exists = await anyio.Path(plan.path, ".git").exists()
            dirty: bool | None = None
            head: str | None = None
            if exists:
                _, status, _ = await git("status", "--porcelain", cwd=plan.path, check=False)
                dirty = bool(status.strip())
                _, out, _ = await git("rev-parse", "HEAD", cwd=plan.path, check=False)
                head = out.strip() or None
            found.append(
                WorktreeEntry(
                    id=plan.id,
                    path=plan.path,
                    repo=plan.repo,
                    branch=plan.branch,
                    baseCommit=plan.base_commit,
                    headCommit=head,
                    keep=plan.keep,
                    conversationId=plan.conversation_id,
                    runIds=plan.run_ids,
                    createdAt=plan.created_at,
                    exists=exists,
                    dirty=dirty,
                    inUse=plan.id in active,
                )
            )
        return found

    async def remove(self, ws_id: str, *, force: bool, active: set[str]) -> WorktreeEntry:
        """Remove one worktree by id; uncommitted changes or a running run need force."""
        entry = next((e for e in await self.entries(active) if e.id == ws_id), None)
        if entry is None:
            raise NotFound(f"no worktree {ws_id}")
        if entry.inUse:
            raise Conflict(f"worktree {ws_id} is in use by an active run", code="WORKTREE_BUSY")
        if entry.dirty and not force:
            raise Conflict(
                f"worktree {ws_id} has uncommitted changes; remove it with force to lose them",
                code="WORKTREE_DIRTY",
            )
        plan = await self._read_meta(ws_id)
        assert plan is not None
        committed = entry.headCommit is not None and entry.headCommit != plan.base_commit
        await self._remove(plan, drop_branch=not committed, force=force)
        return entry

    async def prune(self, active: set[str]) -> list[WorktreeEntry]:
        """Remove every idle worktree without changes; prune git's stale worktree entries."""
        removed: list[WorktreeEntry] = []
        for entry in await self.entries(active):
            plan = await self._read_meta(entry.id)
            if plan is None or entry.inUse:
                continue
            committed = entry.headCommit is not None and entry.headCommit != plan.base_commit
            if not entry.exists or (not entry.dirty and not committed):
                await self._remove(plan, drop_branch=not committed)
                removed.append(entry)
        await self.reconcile()
        return removed

    async def reconcile(self, run_exists: RunExists | None = None) -> list[str]:
        """Start-up: forget worktrees whose directory is gone; remove those none of whose
        runs exist any more (a crash mid-delete, say) unless they hold changes (those stay,
        for `od-runs worktrees rm ID --force`); `git worktree prune` in every known repo.
        Returns the ids removed."""
        repos: set[str] = set()
        removed: list[str] = []
        for plan in await self._all_meta():
            repos.add(plan.repo)
            if not await anyio.Path(plan.path, ".git").exists():
                await self._forget(plan.id)
                continue
            if run_exists is None or not plan.run_ids:
                continue
            if any([await run_exists(run_id) for run_id in plan.run_ids]):
                continue
            _, status, _ = await git("status", "--porcelain", cwd=plan.path, check=False)
            _, head, _ = await git("rev-parse", "HEAD", cwd=plan.path, check=False)
            if status.strip() or head.strip() != plan.base_commit:
                log.warning(
                    "worktree %s outlived its runs but holds changes; kept (remove it by name)",
                    plan.id,
                )
                continue
            await self._remove(plan, drop_branch=True)
            removed.append(plan.id)
        for repo in repos:
            if await anyio.Path(repo).is_dir():
                try:
                    await git("worktree", "prune", cwd=repo, check=False)
                except WorkspaceError as exc:
                    log.warning("cannot prune worktrees of %s: %s", repo, exc)
        return removed

    # Internals ----------------------------------------------------------------------------

    async def _remove(self, plan: Plan, *, drop_branch: bool, force: bool = False) -> None:
        async with self._lock(plan.repo):
            if await anyio.Path(plan.path).exists():
                args = ["worktree", "remove", *(["--force"] if force else []), plan.path]
                code, _, err = await git(*args, cwd=plan.repo, check=False)
                if code != 0:
                    if not force:
                        raise WorkspaceError(f"git worktree remove failed: {err}")
                    # A worktree git no longer knows: its directory is all that is left.
                    await anyio.to_thread.run_sync(shutil.rmtree, plan.path, True)
            await git("worktree", "prune", cwd=plan.repo, check=False)
            if drop_branch:
                # Only a branch still at its base goes: commits on it are the user's to judge.
                _, tip, _ = await git(
                    "rev-parse", "--verify", "--quiet", f"refs/heads/{plan.branch}",
                    cwd=plan.repo, check=False,
                )  # fmt: skip
                if tip.strip() == plan.base_commit:
                    await git("branch", "-D", plan.branch, cwd=plan.repo, check=False)
            await self._forget(plan.id)

    def _meta_path(self, ws_id: str) -> anyio.Path:
        assert self.root is not None
        return anyio.Path(self.root / f"{ws_id}.json")

    async def _read_meta(self, ws_id: str) -> Plan | None:
        if self.root is None:
            return None
        try:
            text = await self._meta_path(ws_id).read_text()
            return Plan(**json.loads(text))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    async def _write_meta(self, plan: Plan) -> None:
        target = self._meta_path(plan.id)
        tmp = anyio.Path(str(target) + ".tmp")
        await tmp.write_text(json.dumps(asdict(plan), indent=2))
        await tmp.replace(target)

    async def _forget(self, ws_id: str) -> None:
        await self._meta_path(ws_id).unlink(missing_ok=True)

    async def _all_meta(self) -> list[Plan]:
        if self.root is None or not await anyio.Path(self.root).is_dir():
            return []
        plans: list[Plan] = []
        async for item in anyio.Path(self.root).iterdir():
            if item.suffix == ".json":
                plan = await self._read_meta(item.stem)
                if plan is not None:
                    plans.append(plan)
        return sorted(plans, key=lambda p: p.created_at)


__all__ = [
    "MAX_DIFF_BYTES",
    "MAX_FILES",
    "Plan",
    "WorkspaceError",
    "Workspaces",
    "git",
    "workspace_id",
]
