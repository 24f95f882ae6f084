"""The documentation names everything a user can set or call.

Each test collects one kind of name from the code itself (environment variables from the
source, options from the click command tree, routes from the FastAPI app) and fails listing
every one that README.md and docs/*.md never mention.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
from starlette.routing import Mount, Route

import od_runs
from od_runs.cli import main as cli_main
from od_runs.config import Settings
from od_runs.http_app import create_app

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(od_runs.__file__).resolve().parent
ENV_NAME = re.compile(r"\bOD_RUNS_[A-Z0-9]+(?:_[A-Z0-9]+)*")
# A path parameter: the docs may call {run_id} {id}.
PATH_PARAM = re.compile(r"\{[^}]*\}")


def doc_text() -> str:
    """README.md and every markdown file under docs/, as one text."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in files if path.is_file())


def source_env_vars() -> set[str]:
    """Every OD_RUNS_* name in a string literal of src/ (click envvar= values included)."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update(ENV_NAME.findall(node.value))
    for _, command in commands():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            found.update([envvar] if isinstance(envvar, str) else envvar or [])
    return found


def commands(
    command: click.Command = cli_main, path: tuple[str, ...] = ("od-runs",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """The command tree from `od-runs` down, each command with its path."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, (*path, name))


def long_options(command: click.Command, path: tuple[str, ...]) -> set[str]:
    """Every --long name of a command's options, --help included."""
    ctx = click.Context(command, info_name=path[-1])
    names: set[str] = set()
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names


def route_names() -> dict[str, re.Pattern[str]]:
    """`METHOD /path` of every route of the daemon's app (a bare path where any method goes,
    `/prefix/…` for a mount), each with the pattern that finds it in prose."""
    names: dict[str, re.Pattern[str]] = {}
    for route in create_app(Settings()).routes:
        if isinstance(route, Mount):
            names[f"{route.path}/…"] = route_pattern(f"{route.path}/", prefix=True)
        elif isinstance(route, Route) and route.methods:
            for method in route.methods - {"HEAD"}:
                names[f"{method} {route.path}"] = route_pattern(f"{method} {route.path}")
        elif isinstance(route, Route):
            names[route.path] = route_pattern(route.path)
    return names


def route_pattern(name: str, *, prefix: bool = False) -> re.Pattern[str]:
    """Matches a route name in prose: any {param} name, nothing path-like right after it
    (unless it names a prefix)."""
    body = r"\{[^}]*\}".join(re.escape(piece) for piece in PATH_PARAM.split(name))
    tail = "" if prefix else r"(?![\w/{.-])"
    return re.compile(rf"(?<![\w/.-]){body}{tail}")


def missing(names: Iterable[str], pattern: Iterable[re.Pattern[str]], text: str) -> list[str]:
    """The names whose pattern does not occur in text, sorted."""
    return sorted(name for name, p in zip(names, pattern, strict=True) if not p.search(text))


def test_the_scanners_find_what_is_known_to_be_there() -> None:
    """A scanner that found nothing would let every documentation test pass."""
    assert {"OD_RUNS_URL", "OD_RUNS_TOKEN", "OD_RUNS_RUN_ID"} <= source_env_vars()
    tree = dict(commands())
    assert {("od-runs", "serve"), ("od-runs", "sessions", "retire")} <= set(tree)
    assert {"--follow", "--agent", "--help"} <= long_options(tree[("od-runs", "start")], ("start",))
    assert {"POST /api/runs", "GET /api/runs/{run_id}/events", "/mcp", "GET /"} <= set(
        route_names()
    )
    assert not route_pattern("GET /").search("`GET /api/runs`")
    assert route_pattern("GET /api/runs/{run_id}").search("`GET /api/runs/{id}` the status")
    assert not route_pattern("GET /api/runs").search("`GET /api/runs/{id}` the status")


def test_every_environment_variable_is_documented() -> None:
    """Each OD_RUNS_* name in src/ (read, or set for children) appears in the docs."""
    text = doc_text()
    names = sorted(source_env_vars())
    patterns = [re.compile(rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])") for name in names]
    absent = missing(names, patterns, text)
    assert not absent, f"environment variables not in README.md or docs/: {', '.join(absent)}"


def test_every_command_and_option_is_documented() -> None:
    """Each `od-runs` command and each of its --long options appears in the docs."""
    text = doc_text()
    names: set[str] = set()
    for path, command in commands():
        names.add(" ".join(path))
        names.update(long_options(command, path))
    ordered = sorted(names)
    patterns = [re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])") for name in ordered]
    absent = missing(ordered, patterns, text)
    assert not absent, f"commands and options not in README.md or docs/: {', '.join(absent)}"


def test_every_route_is_documented() -> None:
    """Each route of the daemon's app (method and path) appears in the docs."""
    text = doc_text()
    routes = route_names()
    absent = missing(routes, routes.values(), text)
    assert not absent, f"routes not in README.md or docs/: {', '.join(absent)}"
