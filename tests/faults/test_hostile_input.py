"""Hostile input the REST tests do not already cover: nesting, cursors, queries, /mcp guard.

Hostile run ids, oversize bodies, wrong content types and the token and bind rules are in
tests/test_rest.py; everything here also checks that no file appears outside runs_log/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Daemon, http_client

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def tree(root: Path) -> set[Path]:
    """Every path under root."""
    return set(root.rglob("*"))


@pytest.fixture(scope="module")
def guarded(shared: Daemon) -> Iterator[httpx.Client]:
    """A client of the module's daemon; afterwards nothing new may exist outside its data dir."""
    root = shared.data_dir.parent
    before = tree(root)
    with shared.client() as http:
        yield http
    new = {p for p in tree(root) - before if shared.data_dir not in p.parents}
    new -= {shared.data_dir.parent / f"daemon-{shared.port}.log"}
    assert new == set(), sorted(map(str, new))[:5]


def assert_clear_4xx(response: httpx.Response, status: int | None = None) -> str:
    """A 4xx with our error body and a message a person can read."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    if status is not None:
        assert response.status_code == status
    message = response.json()["error"]["message"]
    assert isinstance(message, str) and 0 < len(message) < 500
    return message


@pytest.mark.parametrize("depth", [50, 5_000, 200_000])
def test_deeply_nested_json_is_refused_cleanly(guarded: httpx.Client, depth: int) -> None:
    """Nesting deep enough to break a recursive parser is a 4xx, never a 500 or a crash."""
    body = '{"prompt": "x", "env": ' + "[" * depth + "]" * depth + "}"
    response = guarded.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert_clear_4xx(response)
    assert guarded.get("/api/health").status_code == 200


@pytest.mark.parametrize("cursor", ["-1", "1e9", "abc", "0x10", " ", "9" * 30, "1.5"])
def test_bad_cursors_on_the_json_page_and_the_stream(guarded: httpx.Client, cursor: str) -> None:
    """A cursor that is not a non-negative integer is a 400 naming the cursor."""
    run = guarded.post("/api/runs", json={"prompt": "c", "demo": {"fast": True}}).json()
    for url in (
        f"/api/runs/{run['id']}/events?format=json&after={cursor}",
        f"/api/runs/{run['id']}/events?after={cursor}",
    ):
        message = assert_clear_4xx(guarded.get(url), 400)
        assert "after" in message
    if cursor.strip():  # a blank header value cannot be sent at all
        message = assert_clear_4xx(
            guarded.get(f"/api/runs/{run['id']}/events", headers={"Last-Event-ID": cursor}), 400
        )
        assert "Last-Event-ID" in message


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "projectId=" + "p" * 5000, "projectId=a%00b", "conversationId=../../etc"],
)
def test_hostile_list_queries_get_a_4xx_or_an_empty_list(guarded: httpx.Client, query: str) -> None:
    """Filters are values, never paths: an odd one matches nothing or is refused clearly."""
    response = guarded.get(f"/api/runs?{query}")
    if response.status_code == 200:
        assert response.json() == {"runs": []}
    else:
        assert_clear_4xx(response)


@pytest.mark.parametrize(
    "headers",
    [{"Host": "evil.example"}, {"Origin": "http://evil.example"}, {"Host": "127.0.0.1.nip.io"}],
)
def test_the_mcp_endpoint_refuses_foreign_hosts_and_origins(
    guarded: httpx.Client, headers: dict[str, str]
) -> None:
    """DNS-rebinding defence covers /mcp as well as /api."""
    response = guarded.post("/mcp", json=INIT, headers={**MCP_HEADERS, **headers})
    assert response.status_code == 403
    assert guarded.post("/mcp", json=INIT, headers=MCP_HEADERS).status_code == 200


def test_mcp_needs_the_token_when_one_is_set(data_dir: Path) -> None:
    """With a token, /mcp without it is a 401 like every other route."""
    daemon = Daemon(data_dir, token="s3cret-token").start()
    try:
        with http_client(daemon.url) as http:  # daemon.client() would send the token
            assert http.post("/mcp", json=INIT, headers=MCP_HEADERS).status_code == 401
            authorised = {**MCP_HEADERS, "Authorization": "Bearer s3cret-token"}
            assert http.post("/mcp", json=INIT, headers=authorised).status_code == 200
    finally:
        daemon.stop()
