"""No secret leaves the process (invariant 8).

Canary values go into a tool bundle (env, args, url, headers) and into credential-like env
vars of a `command` child that prints them raw and JSON-escaped. None of them may show up in
a REST body, an SSE frame, an MCP result, a SQLite row or any file of the data dir; where the
child printed one, the log says [REDACTED].
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from od_runs.agents.base import Adapter
from od_runs.eventlog import RawJSON, encode_lines, parse_prefix
from od_runs.models import McpServerSpec, McpServerSummary, RunCreate, ToolBundle
from od_runs.redact import (
    MIN_SECRET_LEN,
    REDACTED,
    Scrubber,
    bundle_secrets,
    secret_env_values,
    summarize_bundle,
)
from od_runs.store import DB_NAME

from .conftest import RUN_DEADLINE, Daemon, assert_dense, http_client, wait_terminal, write_script

TS = "2025-01-01T00:00:00.000Z"


def canary(label: str, *, prefix: str = "", suffix: str = "") -> tuple[str, str]:
    """A unique secret value and its random marker, which no output may contain."""
    marker = f"{label}{uuid.uuid4().hex[:12]}"
    return f"{prefix}cnry-{marker}{suffix}", marker


# Helpers -----------------------------------------------------------------------------------


def sse_bytes(url: str, run_id: str) -> bytes:
    """The whole SSE stream of a run, read until the daemon closes it after `end`."""
    with (
        http_client(url, timeout=RUN_DEADLINE) as http,
        http.stream("GET", f"/api/runs/{run_id}/events") as response,
    ):
        assert response.status_code == 200
        return b"".join(response.iter_bytes())


def json_pages(http: httpx.Client, run_id: str) -> list[bytes]:
    """Every JSON page of a run's events, paged with nextCursor."""
    bodies: list[bytes] = []
    cursor = 0
    while True:
        response = http.get(
            f"/api/runs/{run_id}/events", params={"format": "json", "after": cursor, "limit": 7}
        )
        assert response.status_code == 200, response.text
        bodies.append(response.content)
        page = response.json()
        cursor = page["nextCursor"]
        if not page["hasMore"]:
            return bodies


async def mcp_results(url: str, run_ids: list[str]) -> list[bytes]:
    """What an MCP client gets from every read tool about these runs, serialised whole."""
    results: list[bytes] = []
    async with Client(f"{url}/mcp") as client:

        async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            result = await client.call_tool(tool, args)
            assert not result.is_error, result
            results.append(result.model_dump_json().encode())
            assert result.structured_content is not None
            return result.structured_content

        await call("list_runs", {"limit": 200})
        for run_id in run_ids:
            await call("get_run", {"runId": run_id})
            await call("wait_run", {"runId": run_id, "limit": 200, "timeoutSeconds": 5})
            after = 0
            while True:
                page = await call("get_run_events", {"runId": run_id, "after": after, "limit": 5})
                after = page["nextCursor"]
                if not page["hasMore"]:
                    break
    return results


def sqlite_dump(db: Path) -> bytes:
    """Every row of every table (and the schema), every column, read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "runs" in tables
        dump = [repr(conn.execute("SELECT * FROM sqlite_master").fetchall())]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            dump.append(repr(rows))
            # repr() escapes non-ASCII; the values as text are searched too.
            dump += [str(value) for row in rows for value in row]
    finally:
        conn.close()
    return "\n".join(dump).encode()


def files_under(root: Path) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file below root."""
    return [(str(p), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def assert_no_marker(markers: dict[str, str], surfaces: list[tuple[str, bytes]]) -> None:
    """No surface holds any canary's marker, in any encoding the marker survives."""
    leaks = [
        f"{name} in {where}: ...{blob[max(0, i - 60) : i + 40]!r}..."
        for where, blob in surfaces
        for name, marker in markers.items()
        if (i := blob.find(marker.encode())) != -1
    ]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def log_texts(path: str, stream: str) -> list[str]:
    """The output lines of one stream in a run's log (every line strict JSON)."""
    raw = Path(path).read_bytes()
    events = [json.loads(line.decode("utf-8", "strict")) for line in raw.splitlines()]
    assert_dense(events)
    return [e["data"]["text"] for e in events if e["event"] == stream]


# End to end --------------------------------------------------------------------------------

# Prints every value in VALUES (a JSON list baked in below) raw, glued to other text and
# JSON-escaped in both of Python's styles, on stdout and on stderr; then env vars named in ENV.
PRINTER = """\
import json, os, sys
VALUES = json.loads({values!r})
for name in {env!r}:
    VALUES.append(os.environ[name])
for v in VALUES:
    for out in (sys.stdout, sys.stderr):
        print("value=" + v, file=out)
        print("glued<" + v + ">glued", file=out)
        print(json.dumps({{"v": v}}), file=out)
        print(json.dumps({{"v": v}}, ensure_ascii=False), file=out)
print("HARMLESS=" + os.environ["HARMLESS"])
"""


def printed_lines(values: list[str], harmless: str) -> tuple[list[str], list[str]]:
    """The stdout and stderr lines PRINTER writes, with each value replaced by [REDACTED]."""
    lines: list[str] = []
    for _ in values:
        lines += [
            f"value={REDACTED}",
            f"glued<{REDACTED}>glued",
            json.dumps({"v": REDACTED}),
            json.dumps({"v": REDACTED}, ensure_ascii=False),
        ]
    return [*lines, f"HARMLESS={harmless}"], lines


def test_no_canary_reaches_rest_sse_mcp_sqlite_or_files(
    daemon: Daemon, data_dir: Path, tmp_path: Path
) -> None:
    """Invariant 8: bundle and env canaries reach no REST, SSE, MCP, SQLite or file; logs say
    [REDACTED]."""
    markers: dict[str, str] = {}

    def secret(name: str, **kwargs: str) -> str:
        value, markers[name] = canary(name, **kwargs)
        return value

    bundle_env_token = secret("benvtok")
    bundle_env_plain = secret("benvplain")
    bundle_arg_eq = secret("bargeq")
    bundle_arg_pair = secret("bargpair")
    bundle_url = secret("burl", prefix="https://mcp.example.test/", suffix="/sse?x=1")
    bundle_bearer = secret("bbearer")
    bundle_header = secret("bheader")
    bundle = {
        "mcpServers": [
            {
                "id": "github",
                "transport": "stdio",
                "command": "npx",
                "args": [
                    *("-y", "@example/server", f"--api-key={bundle_arg_eq}"),
                    *("--token", bundle_arg_pair),
                ],
                "env": {"GITHUB_TOKEN": bundle_env_token, "ENDPOINT_NAME": bundle_env_plain},
                "label": "GitHub",
            },
            {
                "id": "remote",
                "transport": "http",
                "url": bundle_url,
                "headers": {"Authorization": f"Bearer {bundle_bearer}", "X-Api": bundle_header},
                "enabled": False,
            },
        ]
    }
    # What an agent handed this bundle might print: each value, the bearer token alone.
    bundle_values = [
        bundle_env_token,
        bundle_env_plain,
        bundle_arg_eq,
        bundle_arg_pair,
        bundle_url,
        f"Bearer {bundle_bearer}",
        bundle_bearer,
        bundle_header,
    ]

    env = {
        "MY_API_TOKEN": secret("token"),
        "DB_PASSWORD": secret("password"),
        "AWS_SECRET_ACCESS_KEY": secret("secret"),
        # Characters that JSON must escape, and a first character that ASCII JSON escapes.
        "SERVICE_KEY": secret("quoted", prefix='q"\\', suffix='\\"\t'),
        "SIGNING_KEY": secret("unicode", prefix="ñ", suffix="ü"),
        "HARMLESS": "plainly-visible-value",
    }
    env_names = [name for name in env if name != "HARMLESS"]

    bundle_script = write_script(
        tmp_path, "print_bundle.py", PRINTER.format(values=json.dumps(bundle_values), env=[])
    )
    env_script = write_script(tmp_path, "print_env.py", PRINTER.format(values="[]", env=env_names))
    bundle_request = {
        "agentId": "command",
        "command": [sys.executable, str(bundle_script)],
        "env": {"HARMLESS": "plainly-visible-value"},
        "toolBundle": bundle,
        "clientRequestId": "bundle-run",
        "projectId": "secrets",
    }
    env_request = {
        "agentId": "command",
        "command": [sys.executable, str(env_script)],
        "env": env,
        "projectId": "secrets",
    }

    surfaces: list[tuple[str, bytes]] = []

    def keep(where: str, response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        surfaces.append((where, response.content))
        return response.json()  # type: ignore[no-any-return]

    live: dict[str, bytes] = {}
    with daemon.client() as http:
        bundle_run = keep("POST bundle", http.post("/api/runs", json=bundle_request), 202)
        env_run = keep("POST env", http.post("/api/runs", json=env_request), 202)
        ids = [bundle_run["id"], env_run["id"]]
        followers = [
            threading.Thread(target=lambda i=i: live.__setitem__(i, sse_bytes(daemon.url, i)))
            for i in ids
        ]
        for follower in followers:
            follower.start()

        # A validation error and an idempotency conflict must not echo the payload either.
        broken = {**bundle_request, "toolBundle": {"mcpServers": [{**bundle["mcpServers"][1]}]}}
        broken["toolBundle"]["mcpServers"][0]["transport"] = "carrier-pigeon"
        keep("POST invalid", http.post("/api/runs", json=broken), 422)
        keep("POST conflict", http.post("/api/runs", json={**bundle_request, "prompt": "x"}), 409)

        finals = [wait_terminal(http, run_id) for run_id in ids]
        assert [f["status"] for f in finals] == ["succeeded", "succeeded"], finals
        for follower in followers:
            follower.join(timeout=RUN_DEADLINE)
            assert not follower.is_alive()

        keep("POST retry", http.post("/api/runs", json=bundle_request), 202)
        keep("GET health", http.get("/api/health"), 200)
        keep("GET list", http.get("/api/runs"), 200)
        keep("GET list filtered", http.get("/api/runs", params={"projectId": "secrets"}), 200)
        for run_id in ids:
            body = keep(f"GET {run_id}", http.get(f"/api/runs/{run_id}"), 200)
            keep(f"cancel {run_id}", http.post(f"/api/runs/{run_id}/cancel"), 200)
            surfaces += [(f"events {run_id}", page) for page in json_pages(http, run_id)]
            surfaces.append((f"SSE replay {run_id}", sse_bytes(daemon.url, run_id)))
            surfaces.append((f"SSE live {run_id}", live[run_id]))
    assert body["toolBundle"] is None  # the env run has none
    assert bundle_run["toolBundle"] == {
        "mcpServers": [
            {"id": "github", "transport": "stdio", "enabled": True, "label": "GitHub"},
            {"id": "remote", "transport": "http", "enabled": False, "label": None},
        ]
    }

    surfaces += [
        (f"MCP {i}", blob)
        for i, blob in enumerate(anyio.run(mcp_results, daemon.url, ids, backend="asyncio"))
    ]
    surfaces.append(("SQLite (live)", sqlite_dump(data_dir / DB_NAME)))

    # The child printed every value; the log has [REDACTED] in its place, exactly.
    harmless = "plainly-visible-value"
    for run, values in ((finals[0], bundle_values), (finals[1], env_names)):
        stdout, stderr = printed_lines(list(values), harmless)
        assert log_texts(run["eventsLogPath"], "stdout") == stdout
        assert log_texts(run["eventsLogPath"], "stderr") == stderr
    for where in ("SSE live", "SSE replay"):
        assert REDACTED.encode() in dict(surfaces)[f"{where} {ids[1]}"]

    assert daemon.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    surfaces.append(("SQLite (after stop)", sqlite_dump(data_dir / DB_NAME)))
    surfaces += files_under(data_dir)
    surfaces.append(("daemon stderr", daemon.log_path.read_bytes()))
    assert len(surfaces) > 30
    assert_no_marker(markers, surfaces)


# Scrubber ----------------------------------------------------------------------------------

TRICKY_SECRETS = [
    "plain-secret-value",
    'q"uote\\back-slash',
    "\\leading-backslash",
    "trailing-backslash\\",
    '"leading-quote',
    "ñ-non-ascii-first",
    "mïxed-ünicode-😀",
    "tab\tand\nnewline",
    "123456",
]


def scrub_lines(scrubber: Scrubber, items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Encode events the way the daemon does, scrubbed, and parse every line back."""
    raw, lines, lengths = encode_lines(41, items, TS, scrubber.scrub_json)
    assert sum(lengths) == len(raw)
    parsed = [json.loads(line.decode("utf-8", "strict")) for line in raw[:-1].split(b"\n")]
    assert [parse_prefix(line.line) for line in lines] == [
        (41 + i, e) for i, (e, _) in enumerate(items)
    ]
    return parsed


def test_scrubber_replaces_secrets_in_plain_text() -> None:
    """Error messages and other plain text lose every secret, whole."""
    scrubber = Scrubber(["abcdef", "abcdefgh", "s3cr3t-value"])
    assert scrubber
    assert scrubber.scrub("key abcdefgh and abcdef, s3cr3t-value.") == (
        f"key {REDACTED} and {REDACTED}, {REDACTED}."
    )
    assert scrubber.scrub("nothing here") == "nothing here"


def test_scrubber_ignores_short_values_and_can_be_empty() -> None:
    """Values shorter than MIN_SECRET_LEN would blank ordinary words: they are not secrets."""
    short = "x" * (MIN_SECRET_LEN - 1)
    scrubber = Scrubber([short, ""])
    assert not scrubber
    assert scrubber.scrub(f"say {short}") == f"say {short}"
    assert scrubber.scrub_json(json.dumps(short)) == json.dumps(short)


@pytest.mark.parametrize("secret", TRICKY_SECRETS)
def test_scrubber_redacts_printed_and_json_escaped_secrets_and_keeps_json_valid(
    secret: str,
) -> None:
    """A secret printed raw or JSON-escaped (1-3 times) is [REDACTED]; the line stays JSON."""
    scrubber = Scrubber([secret])
    texts = [
        secret,
        f"x{secret}y",
        json.dumps({"v": secret}),
        json.dumps({"v": secret}, ensure_ascii=False),
        json.dumps(json.dumps(secret)),
    ]
    items: list[tuple[str, Any]] = [("stdout", {"text": t}) for t in texts]
    items.append(("agent", RawJSON(json.dumps({"v": secret}))))
    items.append(("start", {"agentId": "command", "pid": 123456}))
    parsed = scrub_lines(scrubber, items)
    assert [p["data"] for p in parsed[:5]] == [
        {"text": REDACTED},
        {"text": f"x{REDACTED}y"},
        {"text": json.dumps({"v": REDACTED})},
        {"text": json.dumps({"v": REDACTED}, ensure_ascii=False)},
        {"text": json.dumps(json.dumps(REDACTED))},
    ]
    assert parsed[5]["data"] == {"v": REDACTED}
    assert parsed[6]["data"] == {"agentId": "command", "pid": 123456}


@pytest.mark.parametrize("secret", TRICKY_SECRETS)
def test_scrubber_never_breaks_a_json_line_around_near_misses(secret: str) -> None:
    """Output that only resembles a secret still encodes to valid JSON with its id and name."""
    scrubber = Scrubber([secret, "tabcdef", "nabcdef", "u00e9zz"])
    texts = [
        "\tabcdef",
        "x\nabcdef",
        "\u00e9zz and \\u00e9zz",
        "\\" + secret,
        secret + "\\",
        '"' + secret + '"',
        secret[:-1],
        secret[1:],
    ]
    items: list[tuple[str, Any]] = [("stdout", {"text": t}) for t in texts]
    items.append(("start", {"pid": 123456, "code": 1234567}))
    parsed = scrub_lines(scrubber, items)
    assert parsed[0]["data"] == {"text": "\tabcdef"}
    assert parsed[-1]["data"] == {"pid": 123456, "code": 1234567}
    for p in parsed[:-1]:
        assert secret not in p["data"]["text"]


def test_secret_env_values_pick_credential_like_names() -> None:
    """*TOKEN*, *KEY*, *SECRET*, *PASSWORD* and the like, any case; other names are not."""
    env = {
        "MY_API_TOKEN": "a",
        "db_password": "b",
        "AWS_SECRET_ACCESS_KEY": "c",
        "SSH_KEYFILE": "d",
        "GH_AUTH": "e",
        "PATH": "/bin",
        "HOME": "/root",
        "EDITOR": "vi",
    }
    assert sorted(secret_env_values(env)) == ["a", "b", "c", "d", "e"]


# Tool bundles ------------------------------------------------------------------------------


def sample_bundle() -> ToolBundle:
    """A bundle with a secret in every place a secret can hide."""
    return ToolBundle(
        mcpServers=[
            McpServerSpec(
                id="gh",
                command="npx",
                args=[
                    "-y",
                    "@scope/server",
                    "--api-key=ARG-EQ-SECRET",
                    "--token",
                    "ARG-PAIR-SECRET",
                ],
                env={"GITHUB_TOKEN": "ENV-SECRET", "REGION": "ENV-PLAIN-VALUE"},
                label="GitHub",
            ),
            McpServerSpec(
                id="remote",
                transport="http",
                url="https://user:URL-PASSWORD@mcp.example.test/sse?key=URL-QUERY",
                headers={"Authorization": "Bearer HEADER-BEARER", "X-Api-Key": "HEADER-SECRET"},
                enabled=False,
            ),
        ]
    )


def test_summarize_bundle_keeps_only_id_transport_enabled_and_label() -> None:
    """The status body's bundle shows which servers exist, never how to reach them."""
    assert summarize_bundle(None) is None
    summary = summarize_bundle(sample_bundle())
    assert summary is not None
    assert set(McpServerSummary.model_fields) == {"id", "transport", "enabled", "label"}
    assert summary.model_dump() == {
        "mcpServers": [
            {"id": "gh", "transport": "stdio", "enabled": True, "label": "GitHub"},
            {"id": "remote", "transport": "http", "enabled": False, "label": None},
        ]
    }
    text = summary.model_dump_json()
    for word in ("SECRET", "PLAIN", "PASSWORD", "QUERY", "BEARER", "npx", "example", "server"):
        assert word not in text


def test_bundle_secrets_cover_env_headers_url_and_secret_args() -> None:
    """Env and header values, bearer token, url, --api-key=X and --token X values are secret."""
    found = set(bundle_secrets(sample_bundle()))
    assert {
        "ENV-SECRET",
        "ENV-PLAIN-VALUE",
        "ARG-EQ-SECRET",
        "ARG-PAIR-SECRET",
        "https://user:URL-PASSWORD@mcp.example.test/sse?key=URL-QUERY",
        "Bearer HEADER-BEARER",
        "HEADER-BEARER",
        "HEADER-SECRET",
    } <= found
    assert not {"-y", "@scope/server", "npx", "--token"} & found
    assert bundle_secrets(None) == []


def test_a_run_scrubs_its_own_env_and_bundle_secrets() -> None:
    """The adapter hands the child its env as given; scrubbing is on what comes back."""
    request = RunCreate(
        agentId="command",
        command=["true"],
        env={"MY_API_TOKEN": "env-token-value", "HARMLESS": "visible-value"},
        toolBundle=sample_bundle(),
    )
    assert Adapter(request).env()["MY_API_TOKEN"] == "env-token-value"
    scrubber = Scrubber([*secret_env_values(request.env), *bundle_secrets(request.toolBundle)])
    text = "env-token-value visible-value HEADER-BEARER ARG-PAIR-SECRET"
    assert scrubber.scrub(text) == f"{REDACTED} visible-value {REDACTED} {REDACTED}"
