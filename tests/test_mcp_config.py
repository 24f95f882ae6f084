"""`od-runs mcp-config`: snippets each client can read, installs that keep the rest of the
client's config, and the real Codex and Claude Code CLIs accepting what was installed."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from mcp import Client, StdioServerParameters

from od_runs import jsonc
from od_runs.cli import main as cli_main
from od_runs.mcpconfig import CLIENTS, od_runs_command

from .conftest import Daemon, free_port

ROOT = Path(__file__).resolve().parents[1]
CODEX = ROOT / "node_modules" / ".bin" / "codex"
CLAUDE = ROOT / "node_modules" / ".bin" / "claude"
# The real agent CLIs start in about a second; leave room for a busy machine.
CLI_TIMEOUT = 60.0
TEST_DEADLINE = 30.0

# An unrelated server and the client's own settings, in each client's format, with comments
# where the format allows them: all of it must survive an install.
EXISTING: dict[str, str] = {
    "codex": """# my codex settings
model = "o3"  # keep me

[mcp_servers.other]
command = "npx"
args = ["-y", "other-server"]

[profiles.fast]
model = "gpt-5"
""",
    "cursor": '{\n  "mcpServers": {\n    "other": {"command": "npx", "args": ["other"]}\n  }\n}\n',
    "zed": """// Zed settings
//
// For information on how to configure Zed, see the Zed documentation.
{
  "theme": "One Dark", // my theme
  /* fonts */
  "buffer_font_size": 15,
  "context_servers": {
    "other": {"command": "npx", "args": ["other"], "env": {}},
  },
}
""",
    "claude": '{\n  "numStartups": 3,\n  "mcpServers": {"other": {"type": "stdio", '
    '"command": "npx", "args": ["other"], "env": {}}}\n}\n',
    "vscode": '{\n  // workspace servers\n  "servers": {\n    "other": {"type": "stdio", '
    '"command": "npx", "args": ["other"]}\n  }\n}\n',
}
COMMENTS = {"codex": "# keep me", "zed": "// my theme", "vscode": "// workspace servers"}


def client_env(home: Path, url: str | None = None) -> dict[str, str]:
    """A scratch HOME for every client (Codex's CODEX_HOME inside it), no OD_RUNS_* of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OD_RUNS_")
        and k not in ("CODEX_HOME", "XDG_CONFIG_HOME", "CLAUDE_CONFIG_DIR")
    }
    env.update(HOME=str(home), CODEX_HOME=str(home / ".codex"))
    # Claude Code: no update checks or telemetry from a test.
    env.update(CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1")
    if url is not None:
        env["OD_RUNS_URL"] = url
    return env


def od_config(
    home: Path, cwd: Path, *args: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`od-runs mcp-config ARGS` in cwd with the scratch HOME (in-process: it only prints and
    writes files, and an interpreter start per call would be most of this file's time)."""
    env: dict[str, str | None] = {k: None for k in os.environ}
    env.update(client_env(home, url))
    with contextlib.chdir(cwd):
        result = CliRunner().invoke(cli_main, ["mcp-config", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def config_file(client: str, home: Path, cwd: Path) -> Path:
    """Where each client keeps its MCP servers (VS Code: the workspace)."""
    return {
        "codex": home / ".codex" / "config.toml",
        "cursor": home / ".cursor" / "mcp.json",
        "zed": home / ".config" / "zed" / "settings.json",
        "claude": home / ".claude.json",
        "vscode": cwd / ".vscode" / "mcp.json",
    }[client]


def servers_in(client: str, path: Path) -> dict[str, Any]:
    """The servers table of a client's config file, parsed the way the client would."""
    text = path.read_text()
    if client == "codex":
        return tomllib.loads(text)["mcp_servers"]  # type: ignore[no-any-return]
    key = {"cursor": "mcpServers", "zed": "context_servers", "claude": "mcpServers"}.get(
        client, "servers"
    )
    data = jsonc.loads(text) if client in ("zed", "vscode") else json.loads(text)
    return data[key]  # type: ignore[no-any-return]


def parse_claude_command(text: str) -> tuple[dict[str, str], list[str]]:
    """The env pairs and the server argv of a `claude mcp add … -- CMD ARGS` line."""
    argv = shlex.split(text)
    assert argv[:6] == ["claude", "mcp", "add", "--scope", "user", "od-runs"], argv
    split = argv.index("--")
    flags, values = argv[6:split:2], argv[7:split:2]
    assert set(flags) <= {"-e"}, argv
    return dict(value.split("=", 1) for value in values), argv[split + 1 :]


def stdio_argv(client: str, body: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """command + args and env of a printed stdio snippet (from `mcp-config --json`)."""
    if client == "claude":
        env, argv = parse_claude_command(body["text"])
        return argv, env
    if client == "codex":
        entry = tomllib.loads(body["text"])["mcp_servers"]["od-runs"]
    else:
        key = {"cursor": "mcpServers", "zed": "context_servers", "vscode": "servers"}[client]
        entry = json.loads(body["text"])[key]["od-runs"]
    assert entry == body["entry"]
    return [entry["command"], *entry["args"]], entry.get("env", {})


@pytest.mark.parametrize("client", CLIENTS)
def test_each_stdio_snippet_parses_and_names_absolute_paths(client: str, tmp_path: Path) -> None:
    """The printed snippet is valid TOML/JSON (or a claude command line); its command is an
    absolute executable, its data dir absolute; a non-default URL is pinned in env."""
    url = f"http://127.0.0.1:{free_port()}"
    as_json = od_config(tmp_path, tmp_path, client, "--json", url=url)
    printed = od_config(tmp_path, tmp_path, client, url=url)
    assert as_json.returncode == 0 and printed.returncode == 0, as_json.stderr + printed.stderr
    body = json.loads(as_json.stdout)
    assert printed.stdout == body["text"]  # stdout is the snippet alone; hints go to stderr
    assert body["transport"] == "stdio" and body["install"] is None
    assert body["configPath"] == str(config_file(client, tmp_path, tmp_path))
    argv, env = stdio_argv(client, body)
    assert Path(argv[0]).is_absolute() and os.access(argv[0], os.X_OK), argv
    assert argv[0] == od_runs_command()[0]
    data_dir = argv[argv.index("--data-dir") + 1]
    assert data_dir == str(tmp_path / "runs_log")
    assert argv[1 : argv.index("--data-dir")][-1] == "mcp"
    assert env == {"OD_RUNS_URL": url}
    default = json.loads(od_config(tmp_path, tmp_path, client, "--json").stdout)
    assert stdio_argv(client, default)[1] == {}  # the default URL needs no env entry


@pytest.mark.parametrize("client", CLIENTS)
def test_each_http_snippet_points_at_the_daemons_mcp_endpoint(client: str, tmp_path: Path) -> None:
    """--http gives the Streamable HTTP form: `<url>/mcp`, typed where the client wants it."""
    url = f"http://127.0.0.1:{free_port()}"
    result = od_config(tmp_path, tmp_path, client, "--http", "--json", url=url)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["transport"] == "http" and body["entry"]["url"] == f"{url}/mcp"
    if client == "claude":
        assert shlex.split(body["text"]) == [
            *("claude", "mcp", "add", "--scope", "user", "--transport", "http"),
            *("od-runs", f"{url}/mcp"),
        ]
    elif client == "codex":
        entry = tomllib.loads(body["text"])["mcp_servers"]["od-runs"]
        assert entry == {
            "url": f"{url}/mcp",
            "required": True,
            "default_tools_approval_mode": "approve",
        }
    else:
        key = {"cursor": "mcpServers", "zed": "context_servers", "vscode": "servers"}[client]
        entry = json.loads(body["text"])[key]["od-runs"]
        assert entry["url"] == f"{url}/mcp"
        assert entry.get("type") == ("http" if client == "vscode" else None)


@pytest.mark.parametrize("client", CLIENTS)
def test_install_keeps_the_rest_of_the_file_backs_it_up_and_is_idempotent(
    client: str, tmp_path: Path
) -> None:
    """--install adds od-runs next to an unrelated server, keeps comments and other settings,
    backs the old file up first; a second install changes nothing and makes no new backup."""
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    path = config_file(client, home, cwd)
    path.parent.mkdir(parents=True)
    path.write_text(EXISTING[client])
    path.chmod(0o640)
    first = od_config(home, cwd, client, "--install", "--json")
    assert first.returncode == 0, first.stderr
    body = json.loads(first.stdout)
    assert body["install"]["changed"] is True
    backup = Path(body["install"]["backupPath"])
    assert backup.parent == path.parent and backup.name.startswith(f"{path.name}.bak-")
    assert backup.read_text() == EXISTING[client]
    servers = servers_in(client, path)
    assert set(servers) == {"other", "od-runs"}
    assert servers["od-runs"] == body["entry"]
    assert servers["other"]["command"] == "npx"
    text = path.read_text()
    if client in COMMENTS:
        assert COMMENTS[client] in text
    if client == "codex":
        assert tomllib.loads(text)["profiles"] == {"fast": {"model": "gpt-5"}}
    assert path.stat().st_mode & 0o777 == 0o640
    again = od_config(home, cwd, client, "--install")
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout
    assert path.read_text() == text
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, backup.name])


def test_install_into_a_missing_file_creates_it_private(tmp_path: Path) -> None:
    """With no config yet, --install creates the file (0600) and its directory; no backup."""
    result = od_config(tmp_path, tmp_path, "cursor", "--install")
    assert result.returncode == 0, result.stderr
    path = tmp_path / ".cursor" / "mcp.json"
    assert result.stdout.strip() == f"installed od-runs into {path}"
    assert path.stat().st_mode & 0o777 == 0o600
    assert list(json.loads(path.read_text())["mcpServers"]) == ["od-runs"]


def test_a_config_that_does_not_parse_is_left_alone(tmp_path: Path) -> None:
    """A settings file that is not JSON(C) is not touched: a clear error and no backup."""
    path = tmp_path / ".config" / "zed" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text('{\n  "theme": "One Dark"\n  "oops": 1\n}\n')
    result = od_config(tmp_path, tmp_path, "zed", "--install")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {path}: cannot edit it safely")
    assert "line 3" in result.stderr and "Traceback" not in result.stderr
    assert path.read_text() == '{\n  "theme": "One Dark"\n  "oops": 1\n}\n'
    assert list(path.parent.iterdir()) == [path]


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_codex_mcp_list_shows_the_installed_server(transport: str, tmp_path: Path) -> None:
    """Check 6: after `mcp-config codex --install`, the real `codex mcp list` shows od-runs
    (with its absolute command or URL) next to the server that was there before."""
    home = tmp_path
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text(EXISTING["codex"])
    extra = ["--http"] if transport == "http" else []
    installed = od_config(home, tmp_path, "codex", "--install", "--json", *extra)
    assert installed.returncode == 0, installed.stderr
    entry = json.loads(installed.stdout)["entry"]
    env = client_env(home)
    listed = subprocess.run(
        [str(CODEX), "mcp", "list"], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    assert listed.returncode == 0, listed.stderr
    # One table per transport, each under its own `Name …` header.
    rows = {
        line.split()[0]: line
        for line in listed.stdout.splitlines()
        if line.strip() and not line.startswith("Name ")
    }
    assert set(rows) == {"other", "od-runs"}, listed.stdout
    shown = entry["url"] if transport == "http" else entry["command"]
    assert shown in rows["od-runs"] and "enabled" in rows["od-runs"], listed.stdout
    got = subprocess.run(
        [str(CODEX), "mcp", "get", "od-runs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert got.returncode == 0, got.stderr
    server = json.loads(got.stdout)
    assert server["enabled"] is True
    if transport == "stdio":
        assert server["transport"]["type"] == "stdio"
        assert server["transport"]["command"] == entry["command"]
        assert server["transport"]["args"] == entry["args"]
    else:
        assert server["transport"]["type"] == "streamable_http"
        assert server["transport"]["url"] == entry["url"]


def test_codex_rejects_an_approval_mode_it_does_not_know(tmp_path: Path) -> None:
    """`default_tools_approval_mode` is a key Codex reads: a bad value fails its config load,
    so `approve` in our snippet is a value it accepted, not an ignored key."""
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "config.toml").write_text(
        '[mcp_servers.x]\ncommand = "true"\ndefault_tools_approval_mode = "sometimes"\n'
    )
    listed = subprocess.run(
        [str(CODEX), "mcp", "list"],
        env=client_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert listed.returncode != 0
    assert "default_tools_approval_mode" in listed.stderr and "approve" in listed.stderr


def test_claude_code_connects_to_the_installed_server(shared: Daemon, tmp_path: Path) -> None:
    """`mcp-config claude --install` writes what `claude mcp add --scope user` would, and the
    real `claude mcp get` starts the stdio server from another directory and connects."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    installed = od_config(home, tmp_path, "claude", "--install", "--json", url=shared.url)
    assert installed.returncode == 0, installed.stderr
    body = json.loads(installed.stdout)
    got = subprocess.run(
        [str(CLAUDE), "mcp", "get", "od-runs"],
        env=client_env(home),
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert got.returncode == 0, got.stdout + got.stderr
    assert "Scope: User config" in got.stdout
    assert "✔ Connected" in got.stdout, got.stdout
    # The printed command line, run by the real claude, writes the very same entry.
    other_home = tmp_path / "other-home"
    other_home.mkdir()
    argv = shlex.split(body["text"])
    added = subprocess.run(
        [str(CLAUDE), *argv[1:]],
        env=client_env(other_home),
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert servers_in("claude", other_home / ".claude.json")["od-runs"] == body["entry"]


@pytest.mark.anyio
async def test_the_printed_stdio_command_serves_mcp_from_any_directory(
    shared: Daemon, tmp_path: Path
) -> None:
    """The snippet's command, args and env, started by the MCP SDK from an unrelated cwd,
    reach the running daemon: list_runs returns its runs."""
    run = shared.create({"prompt": "seen over stdio", "demo": {"events": 5, "fast": True}})
    made_in, started_in = tmp_path / "a", tmp_path / "b"
    made_in.mkdir()
    started_in.mkdir()
    result = od_config(tmp_path, made_in, "cursor", "--json", url=shared.url)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["entry"]
    params = StdioServerParameters(
        command=entry["command"], args=entry["args"], env=entry["env"], cwd=started_in
    )
    with anyio.fail_after(TEST_DEADLINE):
        async with Client(params, mode="legacy") as client:
            listed = await client.call_tool("list_runs", {})
    assert not listed.is_error
    assert listed.structured_content is not None
    assert run["id"] in json.dumps(listed.structured_content)
    # Nothing was written where the client happened to start it.
    assert list(started_in.iterdir()) == []


@pytest.mark.anyio
async def test_the_http_snippet_url_serves_mcp(shared: Daemon, tmp_path: Path) -> None:
    """The --http snippet's URL is the daemon's Streamable HTTP endpoint."""
    result = od_config(tmp_path, tmp_path, "vscode", "--http", "--json", url=shared.url)
    assert result.returncode == 0, result.stderr
    url = json.loads(result.stdout)["entry"]["url"]
    with anyio.fail_after(TEST_DEADLINE):
        async with Client(url, mode="legacy") as client:
            listed = await client.call_tool("list_runs", {})
    assert not listed.is_error


def test_without_a_venv_script_the_command_is_python_dash_m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no `od-runs` script sits next to the interpreter, the command is `python -m`."""
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(python))
    assert od_runs_command() == [str(python), "-m", "od_runs"]


@pytest.mark.parametrize(
    "existing",
    [
        '[mcp_servers.od-runs]\ncommand = "/old/od-runs"  # stale\n\n[mcp_servers.other]\n'
        'command = "npx"\n',
        'model = "o3"\n'
        'mcp_servers = { other = { command = "npx" }, od-runs = { command = "/old" } }\n',
    ],
    ids=["tables", "inline"],
)
def test_install_replaces_a_stale_codex_entry_in_either_toml_form(
    existing: str, tmp_path: Path
) -> None:
    """An od-runs entry from an older checkout is replaced; `[tables]` and inline tables both
    keep their form and their neighbours."""
    path = tmp_path / ".codex" / "config.toml"
    path.parent.mkdir()
    path.write_text(existing)
    result = od_config(tmp_path, tmp_path, "codex", "--install", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    servers = servers_in("codex", path)
    assert servers == {"other": {"command": "npx"}, "od-runs": body["entry"]}
    assert ("mcp_servers = {" in path.read_text()) == ("mcp_servers = {" in existing)


def test_the_readme_shows_mcp_config_for_every_client() -> None:
    """Each client has its README paragraph with its `od-runs mcp-config` command."""
    readme = (ROOT / "README.md").read_text()
    titles = ["Codex", "Cursor", "Zed", "Claude Code", "VS Code"]
    for client, title in zip(CLIENTS, titles, strict=True):
        assert f"**{title}**: `od-runs mcp-config {client}" in readme, client
