"""Approval policy: how a run answers its agent's requests to run a command or edit files.

A run's `approvalPolicy` is `allow`, `deny`, or `default`: allow what stays inside the run's
cwd and deny the rest. "Stays inside" is a heuristic read of the request, not a sandbox: a
command must run in cwd and every absolute, home-relative or `..` path among its words
must resolve inside cwd; a file change must touch only paths inside cwd; extra permissions
must name only such paths and no network. The agent's own sandbox still applies; this only
decides what od-runs answers when the agent asks. A form or link meant for a person (MCP
elicitation) is accepted only under `allow`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any

from .fields import dict_field
from .text import command_summary, relative, short, unwrap_shell

COMMAND = ("item/commandExecution/requestApproval", "execCommandApproval")
FILE_CHANGE = ("item/fileChange/requestApproval", "applyPatchApproval")
PERMISSIONS = "item/permissions/requestApproval"
ELICITATION = "mcpServer/elicitation/request"
# Older (v1) requests answer approved/denied instead of accept/decline.
_LEGACY = ("execCommandApproval", "applyPatchApproval")


@dataclass(frozen=True, slots=True)
class Decision:
    """What od-runs answers one approval request, and why (for the `approval` event)."""

    allowed: bool
    reason: str
    summary: str
    call_id: str | None
    result: Any


def decide(
    policy: str, method: str, params: dict[str, Any], root: str, items: dict[str, Any]
) -> Decision | None:
    """The answer to an approval request under policy; None if method is no approval.

    root is the run's cwd; items are the tool items announced so far by id (a file-change
    request names only its item). Resolves paths on disk: call it off the event loop.
    """
    root = os.path.realpath(root)
    call_id = params.get("itemId") or params.get("callId")
    if method in COMMAND:
        raw = params.get("command")
        command = shlex.join(raw) if isinstance(raw, list) else str(raw or "")
        workdir = str(params.get("cwd") or root)
        inside = command_stays_inside(command, workdir, root)
        summary = command_summary(command)
    elif method in FILE_CHANGE:
        paths = change_paths(params, items.get(str(params.get("itemId") or "")), root)
        inside = bool(paths) and all(_inside(p, root) for p in paths)
        summary = ", ".join(relative(p, root) for p in paths) or "edit files"
    elif method == PERMISSIONS:
        wanted = dict_field(params, "permissions")
        inside = permissions_stay_inside(wanted, root)
        summary = "more permissions: " + ", ".join(sorted(k for k, v in wanted.items() if v))
    elif method == ELICITATION:
        allowed = policy == "allow"
        why = "policy allow" if allowed else f"policy {policy}: a question for a person"
        summary = short(str(params.get("message") or "a question"), 160)
        return Decision(allowed, why, summary, None, _result(method, allowed, params))
    else:
        return None
    if policy in ("allow", "deny"):
        allowed, why = policy == "allow", f"policy {policy}"
    else:
        allowed = inside
        why = "stays inside the run's cwd" if inside else "reaches outside the run's cwd"
    return Decision(allowed, why, summary, call_id, _result(method, allowed, params))


def command_stays_inside(command: str, workdir: str, root: str) -> bool:
    """True if a shell command runs inside root and every path it names resolves there."""
    if not _inside(workdir, root):
        return False
    try:
        words = shlex.split(unwrap_shell(command), comments=True)
    except ValueError:
        return False  # unbalanced quotes: nothing to reason about
    return all(
        _inside(_absolute(candidate, workdir), root)
        for word in words
        for candidate in _path_candidates(word)
    )


def permissions_stay_inside(wanted: dict[str, Any], root: str) -> bool:
    """True if extra permissions ask for no network and only paths inside root."""
    network = wanted.get("network")
    if isinstance(network, dict) and network.get("enabled"):
        return False
    fs = dict_field(wanted, "fileSystem")
    paths = [str(p) for key in ("read", "write") for p in fs.get(key) or []]
    paths += [
        str(e["path"]) for e in fs.get("entries") or [] if isinstance(e, dict) and e.get("path")
    ]
    return all(_inside(_absolute(p, root), root) for p in paths)


def change_paths(params: dict[str, Any], item: Any, root: str) -> list[str]:
    """Absolute paths a file change would touch: its item's changes, moves, grantRoot."""
    paths: list[str] = []
    legacy = params.get("fileChanges")
    if isinstance(legacy, dict):
        paths += [str(k) for k in legacy]
    changes = item.get("changes") if isinstance(item, dict) else None
    for change in changes if isinstance(changes, list) else []:
        if isinstance(change, dict) and change.get("path"):
            paths.append(str(change["path"]))
            kind = change.get("kind")
            if isinstance(kind, dict) and kind.get("move_path"):
                paths.append(str(kind["move_path"]))
    if params.get("grantRoot"):
        paths.append(str(params["grantRoot"]))
    return [_absolute(p, root) for p in paths]


def _result(method: str, allowed: bool, params: dict[str, Any]) -> Any:
    """The JSON-RPC result each request kind expects."""
    if method in _LEGACY:
        return {"decision": "approved" if allowed else "denied"}
    if method == PERMISSIONS:
        granted = params.get("permissions") if allowed else None
        return {"permissions": granted or {}, "scope": "turn"}
    if method == ELICITATION:
        if not allowed:
            return {"action": "decline"}
        return (
            {"action": "accept"}
            if params.get("mode") == "url"
            else {"action": "accept", "content": {}}
        )
    return {"decision": "accept" if allowed else "decline"}


def _path_candidates(word: str) -> list[str]:
    """The parts of a shell word that may be paths: the word (minus a redirect), a value."""
    if word[:1] in "<>0123456789":
        word = word.lstrip("0123456789<>&")
    parts = [word, word.split("=", 1)[1]] if "=" in word else [word]
    return [
        p
        for p in parts
        if p.startswith(("/", "~")) or p == ".." or p.startswith("../") or "/../" in p
    ]


def _absolute(path: str, base: str) -> str:
    return os.path.realpath(os.path.join(base, os.path.expanduser(path)))


def _inside(path: str, root: str) -> bool:
    path = os.path.realpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")
