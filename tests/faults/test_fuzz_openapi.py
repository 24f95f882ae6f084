"""Schemathesis with every check against /openapi.json: the document is the contract.

`st run --checks all` takes every operation through its coverage, fuzzing and stateful
phases and holds each answer to the document: no 5xx, every status and content type
documented, bodies that match their schemas, requests the document allows accepted and the
ones it forbids refused, a 405 that lists the allowed methods, the bearer token enforced.
The daemon has a token, so the auth checks have something to check, and stand-ins for the
agent CLIs, so a generated run of codex or claude starts nothing real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from od_runs.agents import agent_ids

from ..conftest import Daemon

# Fuzzing-phase cases per operation. The coverage phase adds its own, about 1,700 (most
# for the four run bodies), and stateful a few dozen scenarios: some 20 s of CPU, split
# between st, the daemon and the demo runs it starts; 20-45 s of wall time on two busy cores.
EXAMPLES = 10
# The wall time st may take before the test gives up (and the pytest timeout above it).
ST_TIMEOUT = 150
# Fixed, so `make test` is repeatable; OD_RUNS_FUZZ_SEED=<n> explores other cases.
SEED = os.environ.get("OD_RUNS_FUZZ_SEED", "20261201")
TOKEN = "fuzz-token"
# Not imported from there: importing it would register its hook in this process too.
HOOKS = "tests.faults.schemathesis_hooks"
CWD_ENV = "OD_RUNS_FUZZ_CWD"  # schemathesis_hooks.CWD_ENV
HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with a token whose codex, claude and ACP agents are `true`."""
    base = tmp_path_factory.mktemp("fuzz")
    (base / "runs_log").mkdir()
    (base / "home").mkdir()
    d = Daemon(base / "runs_log", token=TOKEN)
    stand_in = shutil.which("true") or "/bin/true"
    d.env.update(
        OD_RUNS_CODEX_BIN=stand_in,
        OD_RUNS_CLAUDE_BIN=stand_in,
        OD_RUNS_ACP_COMMAND=stand_in,
        HOME=str(base / "home"),
        CODEX_HOME=str(base / "home" / ".codex"),
    )
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def document(daemon: Daemon) -> dict[str, Any]:
    """The daemon's /openapi.json."""
    with daemon.client() as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_the_schema_lists_every_route(document: dict[str, Any]) -> None:
    """The fuzzer sees the whole REST surface, not a corner of it."""
    paths = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert {
        ("POST", "/api/runs"),
        ("GET", "/api/runs"),
        ("GET", "/api/runs/{run_id}"),
        ("GET", "/api/runs/{run_id}/events"),
        ("POST", "/api/runs/{run_id}/cancel"),
        ("GET", "/api/health"),
        ("GET", "/api/sessions"),
        ("GET", "/api/sessions/{session_id}"),
        ("POST", "/api/sessions/{session_id}/retire"),
    } <= paths


def test_the_run_body_has_one_schema_per_registered_agent(document: dict[str, Any]) -> None:
    """A client reads the agents it may start from the document, each with its own fields."""
    schemas = document["components"]["schemas"]
    offered = []
    for branch in schemas["RunCreate"]["oneOf"]:
        agent = schemas[branch["$ref"].rsplit("/", 1)[1]]["properties"]["agentId"]
        offered += agent.get("enum", [agent.get("const")])
    assert sorted(offered) == agent_ids()
    demo = schemas["RunCreate.demo"]["properties"]
    assert demo["agentId"]["const"] == "demo"
    assert demo["model"]["type"] == "null"
    assert demo["sessionRef"]["type"] == "null"
    assert "command" in schemas["RunCreate.command"]["required"]
    assert document["security"] == [{"bearerToken": []}]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/runs", "GET, POST"),
        ("GET", "/api/runs/run-0123456789abcdef/cancel", "POST"),
        ("POST", "/static/app.js", "GET, HEAD"),
    ],
)
def test_a_405_lists_every_method_the_path_takes(
    daemon: Daemon, method: str, path: str, allowed: str
) -> None:
    """RFC 9110: a 405 carries Allow, with the methods of all the routes on the path."""
    with daemon.client() as http:
        response = http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.slow
@pytest.mark.timeout(ST_TIMEOUT + 30)
def test_every_schemathesis_check_passes(daemon: Daemon, tmp_path: Path) -> None:
    """Every answer to every generated request, valid or not, is what the document says."""
    (tmp_path / "cwd").mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SCHEMATHESIS_HOOKS": HOOKS,
        CWD_ENV: str(tmp_path / "cwd"),
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        f"{daemon.url}/openapi.json",
    ]
    # In tmp_path: st keeps what it found in ./.schemathesis.
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=ST_TIMEOUT
    )
    report = done.stdout[-20_000:] + done.stderr[-5_000:]
    assert done.returncode == 0, report
    generated = re.search(r"(\d+) generated", done.stdout)
    assert generated is not None and int(generated.group(1)) >= 9 * EXAMPLES, report
