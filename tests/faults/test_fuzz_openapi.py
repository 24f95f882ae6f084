"""Schemathesis against /openapi.json: no input the schema allows or forbids makes a 5xx."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case

from ..conftest import Daemon

# Per operation; bounded so the whole file stays within seconds.
EXAMPLES = 25


@pytest.fixture(scope="module")
def api(shared: Daemon) -> Iterator[tuple[Daemon, Any]]:
    """The daemon and its schema as the daemon serves it."""
    yield shared, schemathesis.openapi.from_url(f"{shared.url}/openapi.json")


def defuse(case: Case) -> None:
    """Keep generated runs harmless: no arbitrary program, no endless demo."""
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("command"), list):
        body["command"] = [sys.executable, "-c", "pass"]
    demo = body.get("demo")
    if isinstance(demo, dict):
        demo.update(events=4, durationSeconds=0, fast=True)


def operations(api: tuple[Daemon, Any]) -> list[Any]:
    return [result.ok() for result in api[1].get_all_operations()]


def test_the_schema_lists_every_route(api: tuple[Daemon, Any]) -> None:
    """The fuzzer sees the whole REST surface, not a corner of it."""
    paths = {(op.method.upper(), op.path) for op in operations(api)}
    assert {
        ("POST", "/api/runs"),
        ("GET", "/api/runs"),
        ("GET", "/api/runs/{run_id}"),
        ("GET", "/api/runs/{run_id}/events"),
        ("POST", "/api/runs/{run_id}/cancel"),
        ("GET", "/api/health"),
    } <= paths


def test_no_generated_request_gets_a_server_error_or_hangs(api: tuple[Daemon, Any]) -> None:
    """Valid and invalid cases alike: every answer is below 500 and arrives in time."""
    daemon, _ = api
    answered: list[tuple[str, int]] = []
    session = requests.Session()
    session.trust_env = False
    for operation in operations(api):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Case) -> None:
            defuse(case)
            request = case.as_transport_kwargs(base_url=daemon.url)
            # Streamed and closed after the head: an SSE answer is judged by its status,
            # and a live stream would otherwise be read until the run ends.
            with session.request(**request, stream=True, timeout=10) as response:
                status = response.status_code
            assert status < 500, (case.method, case.formatted_path, case.body)
            answered.append((case.method, status))

        check()
    assert len(answered) >= EXAMPLES
    assert any(code >= 400 for _, code in answered), "the fuzzer never sent a bad request"
