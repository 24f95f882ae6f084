"""A run's tool bundle in the form each agent takes it, secrets kept off the command line.

Only servers with `enabled: true` are handed over. What a server needs (command, args, env,
url, headers) goes to the agent over a channel nobody else reads:

- `codex`: a config profile `$CODEX_HOME/od-runs-<random>.config.toml`, written 0600 before
  the spawn and removed once Codex has started its thread (after the run at the latest); the
  command line only says `-p od-runs-<random>`.
  Codex layers it over the user's own config (so login, sessions and settings stay as they
  are), starts the servers itself and runs their tools without asking
  (`default_tools_approval_mode = "approve"`).
- `acp`: the `mcpServers` of `session/new`, sent over the agent's stdin.
- `claude`: an `mcpServers` JSON file for `--mcp-config`, 0600 in a private 0700 temp dir,
  removed as soon as Claude Code has started (and after the run in any case); its tools are
  allowed with `--allowedTools mcp__<id>` (see claude.py).

Each function also returns the servers it left out, with the reason, for a warning event.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomlkit

from ..models import McpServerSpec, ToolBundle

if TYPE_CHECKING:
    from acp.schema import HttpMcpServer, McpServerStdio, SseMcpServer

    AcpServer = McpServerStdio | HttpMcpServer | SseMcpServer

# Codex MCP tools run without a prompt: a background run has nobody to answer one.
CODEX_APPROVAL_MODE = "approve"
CODEX_PROFILE_PREFIX = "od-runs-"
CODEX_PROFILE_SUFFIX = ".config.toml"

Skipped = list[tuple[str, str]]  # (server id, why it was not handed over)


def enabled_servers(bundle: ToolBundle | None) -> list[McpServerSpec]:
    """The bundle's servers that are enabled, in order."""
    return [s for s in bundle.mcpServers if s.enabled] if bundle is not None else []


def codex_profile(servers: list[McpServerSpec]) -> tuple[str, Skipped]:
    """The TOML of a Codex config profile with one `[mcp_servers.<id>]` table per server."""
    tables, skipped = codex_mcp_servers(servers)
    return (tomlkit.dumps({"mcp_servers": tables}) if tables else ""), skipped


def codex_mcp_servers(servers: list[McpServerSpec]) -> tuple[dict[str, dict[str, Any]], Skipped]:
    """Codex's `mcp_servers` config: one entry per server it can start, and those it cannot."""
    tables: dict[str, dict[str, Any]] = {}
    skipped: Skipped = []
    for server in servers:
        entry: dict[str, Any]
        if server.transport == "stdio":
            if not server.command:
                skipped.append((server.id, "a stdio server needs a command"))
                continue
            entry = {"command": server.command}
            if server.args:
                entry["args"] = list(server.args)
            if server.env:
                entry["env"] = dict(server.env)
        elif server.transport == "http":
            if not server.url:
                skipped.append((server.id, "an http server needs a url"))
                continue
            entry = {"url": server.url}
            if server.headers:
                entry["http_headers"] = dict(server.headers)
        else:
            skipped.append((server.id, "Codex does not speak the SSE transport"))
            continue
        entry["default_tools_approval_mode"] = CODEX_APPROVAL_MODE
        # The caller asked for these tools: Codex waits for the server before the first
        # model request (else a quick model calls a tool not yet listed), and fails the run
        # if it cannot start, instead of carrying on without it.
        entry["required"] = True
        tables[server.id] = entry
    return tables, skipped


def write_codex_profile(codex_home: Path, text: str) -> str:
    """Write a fresh 0600 profile into codex_home; returns its name for `codex -p NAME`."""
    codex_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{CODEX_PROFILE_PREFIX}{secrets.token_hex(8)}"
    path = codex_home / f"{name}{CODEX_PROFILE_SUFFIX}"
    # O_EXCL: never write through a file (or link) someone else put there.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return name


def remove_codex_profile(codex_home: Path, name: str) -> None:
    """Delete a profile written by write_codex_profile (gone already is fine)."""
    with contextlib.suppress(FileNotFoundError):
        (codex_home / f"{name}{CODEX_PROFILE_SUFFIX}").unlink()


def acp_servers(
    servers: list[McpServerSpec], *, http: bool, sse: bool
) -> tuple[list[AcpServer], Skipped]:
    """`session/new` mcpServers; http and sse: whether the agent said it supports them."""
    # Only ACP runs pay for the ACP schema (see acp.py).
    from acp.schema import EnvVariable, HttpHeader, HttpMcpServer, McpServerStdio, SseMcpServer

    out: list[AcpServer] = []
    skipped: Skipped = []
    for server in servers:
        headers = [HttpHeader(name=k, value=v) for k, v in server.headers.items()]
        if server.transport == "stdio":
            if not server.command:
                skipped.append((server.id, "a stdio server needs a command"))
                continue
            env = [EnvVariable(name=k, value=v) for k, v in server.env.items()]
            out.append(
                McpServerStdio(name=server.id, command=server.command, args=server.args, env=env)
            )
        elif not server.url:
            skipped.append((server.id, f"an {server.transport} server needs a url"))
        elif server.transport == "http" and http:
            out.append(HttpMcpServer(type="http", name=server.id, url=server.url, headers=headers))
        elif server.transport == "sse" and sse:
            out.append(SseMcpServer(type="sse", name=server.id, url=server.url, headers=headers))
        else:
            skipped.append((server.id, f"the agent does not support {server.transport} servers"))
    return out, skipped


def claude_mcp_config(servers: list[McpServerSpec]) -> tuple[dict[str, Any], Skipped]:
    """Claude Code's `{"mcpServers": {id: {type, command, args, env | url, headers}}}`."""
    entries: dict[str, dict[str, Any]] = {}
    skipped: Skipped = []
    for server in servers:
        entry: dict[str, Any]
        if server.transport == "stdio":
            if not server.command:
                skipped.append((server.id, "a stdio server needs a command"))
                continue
            entry = {"type": "stdio", "command": server.command, "args": list(server.args)}
            if server.env:
                entry["env"] = dict(server.env)
        elif not server.url:
            skipped.append((server.id, f"an {server.transport} server needs a url"))
            continue
        else:
            entry = {"type": server.transport, "url": server.url}
            if server.headers:
                entry["headers"] = dict(server.headers)
        entries[server.id] = entry
    return {"mcpServers": entries}, skipped


def skipped_warnings(skipped: Skipped) -> list[tuple[str, Any]]:
    """One warning event per server that was not handed over."""
    return [
        ("agent", {"type": "warning", "text": f"Tool server {sid!r} was not handed over: {why}."})
        for sid, why in skipped
    ]
