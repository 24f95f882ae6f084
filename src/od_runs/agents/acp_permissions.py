"""How an `acp` run answers its agent's permission requests: the run's `approvalPolicy`.

The same three policies as approvals.py (the app-server's requests): `allow` and `deny`
answer every request alike; `default` allows what stays inside the run's cwd and denies the
rest. An ACP request is about a tool call, so for `default`:

- a write (kind edit, delete or move, or any request carrying a diff) must name its paths,
  and every one must resolve (symlinks included) inside cwd;
- a command must run in cwd and every path among its words must resolve there
  (approvals.command_stays_inside, the app-server's rule);
- reads, searches and fetches are allowed: the policy guards the disk, the agent's own
  sandbox does the rest.

Pure functions of their arguments; they touch the disk only to resolve paths, so adapters
call decide() off the event loop.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..models import ApprovalPolicy
from .approvals import command_stays_inside

# ACP tool kinds that change files.
WRITE_KINDS = frozenset({"edit", "delete", "move"})


@dataclass(frozen=True)
class Decision:
    """Whether a request is allowed, and one line saying why."""

    allowed: bool
    reason: str


def decide(
    policy: ApprovalPolicy,
    cwd: str,
    kind: str | None,
    paths: Iterable[str] = (),
    *,
    writes: bool = False,
    command: Any = None,
    workdir: str | None = None,
) -> Decision:
    """The policy's answer to a request of this kind touching these paths.

    writes: the request carries a diff (a write whatever its kind says); command and
    workdir: what an execute request wants to run (argv list or string) and where.
    """
    if policy == "allow":
        return Decision(True, "approvalPolicy is allow")
    if policy == "deny":
        return Decision(False, "approvalPolicy is deny")
    named = [p for p in paths if p]
    if writes or kind in WRITE_KINDS:
        if not named:
            return Decision(False, "a write that names no path cannot be shown to stay in cwd")
        outside = [p for p in named if not inside(p, cwd)]
        if outside:
            return Decision(False, f"writes outside the run's cwd: {outside[0]}")
        return Decision(True, "writes only inside the run's cwd")
    if kind == "execute":
        where = os.path.join(cwd, workdir) if workdir else cwd
        line = shlex.join(command) if isinstance(command, list) else str(command or "")
        if not command_stays_inside(line, where, os.path.realpath(cwd)):
            return Decision(False, "runs a command that reaches outside the run's cwd")
        return Decision(True, "runs a command inside the run's cwd")
    return Decision(True, "does not write outside the run's cwd")


def inside(path: str, cwd: str) -> bool:
    """True if path (relative paths are taken from cwd) resolves to cwd or below it."""
    root = os.path.realpath(cwd)
    target = os.path.realpath(os.path.join(root, os.path.expanduser(path)))
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)
