"""`od-runs mcp-config`: print or install the od-runs MCP server entry for a client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .cli_group import DEFAULT_URL, again_after, data_dir_option, main
from .mcpconfig import (
    CLIENTS,
    SERVER_NAME,
    Client,
    ConfigError,
    config_path,
    server_spec,
    snippet,
)
from .mcpconfig import install as install_entry


@main.command("mcp-config")
@click.argument("client", type=click.Choice(CLIENTS))
@click.option(
    "--http",
    "use_http",
    is_flag=True,
    help="Streamable HTTP form (<url>/mcp of the daemon) instead of stdio.",
)
@data_dir_option("Data dir pinned (as an absolute path) in the stdio form.")
@click.option("--name", default=SERVER_NAME, show_default=True, help="Server name in the config.")
@click.option(
    "--install",
    is_flag=True,
    help="Write it into the client's config file (backed up first, the rest kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def mcp_config(
    ctx: click.Context,
    client: Client,
    use_http: bool,
    data_dir: Path,
    name: str,
    install: bool,
    as_json: bool,
) -> None:
    """Print (or --install) the MCP server entry for codex, cursor, zed, claude or vscode."""
    spec = server_spec(
        url=ctx.obj["url"],
        default_url=DEFAULT_URL,
        data_dir=data_dir,
        token=ctx.obj["token"],
        http=use_http,
    )
    path = config_path(client, os.environ, Path.cwd())
    snip = snippet(client, spec, name=name, path=path)
    result = None
    if install:
        try:
            result = install_entry(client, snip, path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        body = snip.model_dump(mode="json")
        body["install"] = result.model_dump(mode="json") if result else None
        click.echo(json.dumps(body, indent=2))
    elif result is None:
        where = "run" if client == "claude" else f"add to {path}:"
        click.echo(f"# {client}: {where}", err=True)
        click.echo(snip.text, nl=False)
    elif result.changed:
        backup = f" (backup: {result.backupPath})" if result.backupPath else ""
        click.echo(f"installed {name} into {path}{backup}")
    else:
        click.echo(f"{name} is already installed in {path}; nothing changed")
    if ctx.obj["token"] and not as_json:
        click.echo("note: this entry contains your token", err=True)
