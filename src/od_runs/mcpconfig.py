"""`od-runs mcp-config`: the MCP server entry for Codex, Cursor, Zed, Claude Code and VS Code,
as a snippet to paste or written into the client's own config file."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel

from . import jsonc

Client = Literal["codex", "cursor", "zed", "claude", "vscode"]
CLIENTS: tuple[Client, ...] = ("codex", "cursor", "zed", "claude", "vscode")
SERVER_NAME = "od-runs"
# Where each client keeps its servers inside its config file.
SERVERS_KEY: dict[Client, str] = {
    "codex": "mcp_servers",
    "cursor": "mcpServers",
    "zed": "context_servers",
    "claude": "mcpServers",
    "vscode": "servers",
}


class ConfigError(Exception):
    """A config file we cannot edit safely; the message says why and what to do."""


class ServerSpec(BaseModel):
    """How a client reaches od-runs: a command to start (stdio) or a URL (Streamable HTTP)."""

    transport: Literal["stdio", "http"]
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    url: str | None = None
    headers: dict[str, str] = {}


class Snippet(BaseModel):
    """What `mcp-config` prints: the client's entry, the text to paste, the file it belongs in."""

    client: Client
    name: str
    transport: Literal["stdio", "http"]
    configPath: str
    entry: dict[str, Any]
    text: str


class InstallResult(BaseModel):
    """What `mcp-config --install` did."""

    configPath: str
    changed: bool
    backupPath: str | None = None


def od_runs_command() -> list[str]:
    """An absolute command line that starts this od-runs from any directory."""
    python = Path(os.path.abspath(sys.executable))
    # Not resolved: a venv's python is a symlink, and resolving it would leave the venv.
    script = python.parent / "od-runs"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "od_runs"]


def server_spec(
    *, url: str, default_url: str, data_dir: Path, token: str | None, http: bool
) -> ServerSpec:
    """The stdio spec (absolute command and data dir) or, with http, the `<url>/mcp` spec."""
    if http:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return ServerSpec(transport="http", url=url.rstrip("/") + "/mcp", headers=headers)
    command, *prefix = od_runs_command()
    env: dict[str, str] = {}
    if url.rstrip("/") != default_url.rstrip("/"):
        env["OD_RUNS_URL"] = url
    if token:
        env["OD_RUNS_TOKEN"] = token
    args = [*prefix, "mcp", "--data-dir", str(Path(os.path.abspath(data_dir)))]
    return ServerSpec(transport="stdio", command=command, args=args, env=env)


def client_entry(client: Client, spec: ServerSpec) -> dict[str, Any]:
    """The value under the client's servers key, in that client's own format."""
    entry: dict[str, Any]
    if spec.transport == "stdio":
        entry = {"command": spec.command, "args": spec.args}
        if spec.env or client in ("zed", "claude", "vscode"):
            entry["env"] = spec.env
        if client in ("claude", "vscode"):
            entry = {"type": "stdio", **entry}
    else:
        entry = {"url": spec.url}
        if spec.headers:
            entry["http_headers" if client == "codex" else "headers"] = spec.headers
        if client in ("claude", "vscode"):
            entry = {"type": "http", **entry}
    if client == "codex":
        # Codex starts the session only if the server came up, and runs its tools unattended.
        entry.update(required=True, default_tools_approval_mode="approve")
    return entry


def config_path(client: Client, environ: Mapping[str, str], cwd: Path) -> Path:
    """The file --install writes for client (VS Code: the workspace's .vscode/mcp.json)."""
    home = Path(environ.get("HOME") or Path.home())
    if client == "codex":
        return Path(environ.get("CODEX_HOME") or home / ".codex") / "config.toml"
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    if client == "zed":
        return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "zed" / "settings.json"
    if client == "claude":
        # User scope, as `claude mcp add --scope user` writes it.
        return Path(environ.get("CLAUDE_CONFIG_DIR") or home) / ".claude.json"
    return cwd / ".vscode" / "mcp.json"


def _claude_command(name: str, spec: ServerSpec) -> str:
    """The `claude mcp add` command line that adds the same entry."""
    argv = ["claude", "mcp", "add", "--scope", "user"]
    if spec.transport == "http":
        argv += ["--transport", "http", name, str(spec.url)]
        for key, value in spec.headers.items():
            argv += ["--header", f"{key}: {value}"]
        return shlex.join(argv)
    # The name goes before -e: claude's -e takes every value up to the next option.
    argv.append(name)
    for key, value in spec.env.items():
        argv += ["-e", f"{key}={value}"]
    return shlex.join([*argv, "--", str(spec.command), *spec.args])


def snippet(client: Client, spec: ServerSpec, *, name: str, path: Path) -> Snippet:
    """The text to paste for client: TOML for Codex, a command line for Claude, else JSON."""
    entry = client_entry(client, spec)
    if client == "codex":
        text = (_updated_toml("", SERVERS_KEY[client], name, entry) or "").rstrip("\n") + "\n"
    elif client == "claude":
        text = _claude_command(name, spec) + "\n"
    else:
        text = json.dumps({SERVERS_KEY[client]: {name: entry}}, indent=2) + "\n"
    return Snippet(
        client=client,
        name=name,
        transport=spec.transport,
        configPath=str(path),
        entry=entry,
        text=text,
    )


def _toml_table(entry: dict[str, Any]) -> tomlkit.items.Table:
    """entry as a [table] whose dict values (env, headers) are inline tables."""
    table = tomlkit.table()
    for field, value in entry.items():
        if isinstance(value, dict):
            inline = tomlkit.inline_table()
            inline.update(value)
            table[field] = inline
        else:
            table[field] = value
    table.add(tomlkit.nl())
    return table


def _toml_inline(entry: dict[str, Any]) -> tomlkit.items.InlineTable:
    """entry as an inline table, nested dicts inline too."""
    inline = tomlkit.inline_table()
    for field, value in entry.items():
        inline[field] = _toml_inline(value) if isinstance(value, dict) else value
    return inline


def _updated_toml(text: str, key: str, name: str, entry: dict[str, Any]) -> str | None:
    """The TOML text with [key.name] set to entry, the rest kept; None when it already is."""
    try:
        current = tomllib.loads(text)
        doc = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(f"not valid TOML ({exc}); fix it or move it away first") from None
    servers = current.get(key, {})
    if not isinstance(servers, dict):
        raise ConfigError(f"`{key}` is not a table; fix it by hand first")
    if servers.get(name) == entry:
        return None
    if key not in doc:
        doc[key] = tomlkit.table(is_super_table=True)
    section = doc[key]
    if isinstance(section, tomlkit.items.InlineTable):
        section[name] = _toml_inline(entry)  # `key = {…}` stays inline
    else:
        section[name] = _toml_table(entry)
    return tomlkit.dumps(doc)


def _updated_json(text: str, key: str, name: str, entry: dict[str, Any]) -> str | None:
    """The JSON(C) text with key.name set to entry, comments kept; None when it already is."""
    try:
        current = jsonc.loads(text) if text.strip() else {}
        if not isinstance(current, dict):
            raise jsonc.JsoncError("the top level is not an object")
        servers = current.get(key, {})
        if isinstance(servers, dict) and servers.get(name) == entry:
            return None
        return jsonc.set_member(text, [key, name], entry)
    except jsonc.JsoncError as exc:
        raise ConfigError(
            f"cannot edit it safely: {exc}; fix it or add the snippet by hand"
        ) from None


def install(client: Client, snip: Snippet, path: Path) -> InstallResult:
    """Write the entry into the client's config file, keeping the rest; back it up first."""
    target = Path(os.path.realpath(path))  # a symlinked dotfile stays a symlink
    try:
        text = target.read_text(encoding="utf-8") if target.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    update = _updated_toml if client == "codex" else _updated_json
    try:
        new = update(text, SERVERS_KEY[client], snip.name, snip.entry)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if new is None:
        return InstallResult(configPath=str(path), changed=False)
    backup = None
    if target.exists():
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        backup = target.with_name(f"{target.name}.bak-{stamp}")
        shutil.copy2(target, backup)
    _write_atomic(target, new)
    return InstallResult(
        configPath=str(path), changed=True, backupPath=str(backup) if backup else None
    )


def _write_atomic(path: Path, text: str) -> None:
    """Replace path with text in one rename, keeping its permissions (new files: 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
