"""The `od-runs` click group and what its commands share: --url/--token, --data-dir, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from . import __version__
from .client import DaemonClient
from .config import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT
from .errors import OdRunsError

T = TypeVar("T")
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn our errors into one clean line instead of a traceback."""
    try:
        return anyio.run(fn)
    except OdRunsError as exc:
        raise click.ClickException(f"{exc.message} [{exc.code}]") from None


def daemon_client(ctx: click.Context) -> DaemonClient:
    """A client of the daemon at the --url/--token this invocation was given."""
    return DaemonClient(ctx.obj["url"], ctx.obj["token"])


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
URL_HELP = f"Daemon URL (env OD_RUNS_URL; default {DEFAULT_URL})."
TOKEN_HELP = "Bearer token (env OD_RUNS_TOKEN)."


def _override(key: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    """A callback that lets a subcommand's --url/--token replace the group's value."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(dict)[key] = value

    return callback


def again_after(*keys: str) -> Decorator:
    """--url and/or --token, accepted after the subcommand too (`od-runs ls --url U`).

    No env var and no default here: the group has read those already, and a default would
    overwrite a value given before the subcommand. Only a value typed here replaces it.
    """
    helps = {"url": URL_HELP, "token": TOKEN_HELP}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for key in reversed(keys):
            fn = click.option(
                f"--{key}",
                default=None,
                expose_value=False,
                allow_from_autoenv=False,
                callback=_override(key),
                help=helps[key],
            )(fn)
        return fn

    return decorate


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "OD_RUNS"}
)
@click.version_option(__version__, prog_name="od-runs")
@click.option(
    "--url",
    envvar="OD_RUNS_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Daemon URL for client commands (env OD_RUNS_URL); also accepted after the command.",
)
@click.option(
    "--token",
    envvar="OD_RUNS_TOKEN",
    default=None,
    help="Bearer token (env OD_RUNS_TOKEN); also accepted after the command.",
)
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """od-runs: run coding agents and watch them over MCP, SSE and JSONL logs.

    Start the daemon with `od-runs serve`, then start runs with `od-runs start`,
    follow them with `od-runs tail`, or let an MCP client drive them via `od-runs mcp`.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(url=url, token=token)


def data_dir_option(
    help_text: str, default: str | None = DEFAULT_DATA_DIR, shown: str | bool = True
) -> Decorator:
    """The --data-dir option (env OD_RUNS_DATA_DIR) with a help text for its command."""
    return click.option(
        "--data-dir",
        envvar="OD_RUNS_DATA_DIR",
        default=default,
        show_default=shown,
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
    )
