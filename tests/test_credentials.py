"""Provider credentials: the variables an agent's configuration names reach its child, checked
before the spawn, and their values never leave the daemon (invariant 8).

The end-to-end tests run the real pinned Codex CLI (`codex` and `codex-app-server`) against the
scripted Responses API set up as a custom provider whose `env_key` is a variable only the
daemon has: the fake answers 401 unless the request carries that key (and the header variable
of `env_http_headers`). The key's name does not look like a secret on purpose, so the generic
name-based scrubbing cannot be what hides it.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import anyio
import pytest

from od_runs.agents.app_server_errors import classify_turn_error, lost_session_error
from od_runs.agents.claude import BINARY_ENV as CLAUDE_BIN_ENV
from od_runs.agents.codex import BINARY_ENV, CodexAdapter
from od_runs.agents.credentials import (
    PASS_ENV,
    claude_credentials,
    codex_credentials,
    codex_provider,
    pass_env_names,
)
from od_runs.failures import AgentFailure
from od_runs.models import RunCreate
from od_runs.redact import REDACTED, SECRET_NAME
from od_runs.runs import open_service
from od_runs.store import DB_NAME

from .agent_runs import run_to_end
from .codex_helpers import APP_SERVER, CODEX
from .conftest import Daemon, wait_terminal, write_script
from .fakes.responses_server import FunctionCall, Message, ResponsesServer
from .test_secrets import files_under, sqlite_dump

PROVIDER_ID = "corp-gateway"
PROVIDER_NAME = "Corp Gateway"
KEY_VAR = "CORP_LLM_CRED"
TEAM_VAR = "CORP_LLM_TEAM"
AGENTS = ["codex", APP_SERVER]


def write_config(home: Path, text: str, name: str = "config.toml") -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / name).write_text(text, encoding="utf-8")
    return home


def corp_home(home: Path, server: ResponsesServer) -> Path:
    """A CODEX_HOME whose provider is the scripted server behind its own env_key and header."""
    return write_config(
        home,
        f"""\
model = "gpt-5.5"
model_provider = "{PROVIDER_ID}"
approval_policy = "never"
sandbox_mode = "danger-full-access"

[model_providers.{PROVIDER_ID}]
name = "{PROVIDER_NAME}"
base_url = "{server.base_url}"
wire_api = "responses"
env_key = "{KEY_VAR}"
env_http_headers = {{ "X-Corp-Team" = "{TEAM_VAR}" }}
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 60000
""",
    )


def corp_body(tmp_path: Path, server: ResponsesServer, agent: str) -> dict[str, object]:
    """A run of agent on the corp provider; its env has no key (only the daemon has one)."""
    for name in ("work", "home"):
        (tmp_path / name).mkdir(exist_ok=True)
    body: dict[str, object] = {
        "agentId": agent,
        "prompt": "What is the key?",
        "cwd": str(tmp_path / "work"),
        "env": {
            "CODEX_HOME": str(corp_home(tmp_path / "codex-home", server)),
            "HOME": str(tmp_path / "home"),
        },
    }
    if agent == APP_SERVER:
        body["conversationId"] = "conv-creds"
    return body


def codex_daemon_with(data_dir: Path, **env: str) -> Daemon:
    daemon = Daemon(data_dir)
    for name in (KEY_VAR, TEAM_VAR, PASS_ENV):
        daemon.env.pop(name, None)
    daemon.env.update({BINARY_ENV: str(CODEX), **env})
    return daemon


def test_the_key_name_is_not_one_the_generic_scrubber_would_hide() -> None:
    """The end-to-end tests below prove something only if the name alone hides nothing."""
    assert not SECRET_NAME.search(KEY_VAR) and not SECRET_NAME.search(TEAM_VAR)


# The real Codex CLI --------------------------------------------------------------------------


@pytest.mark.needs_cli("codex")
@pytest.mark.parametrize("agent", AGENTS)
def test_the_providers_key_from_the_daemon_reaches_codex_and_no_output(
    agent: str, tmp_path: Path, data_dir: Path
) -> None:
    """Invariant 8: the daemon's env_key and header variables reach the provider; when the
    model echoes the key, no event, log, status body or database file holds it."""
    key = f"corp-{uuid.uuid4().hex}"
    team = f"team-{uuid.uuid4().hex[:12]}"
    with ResponsesServer() as server:
        server.expect_headers = {"Authorization": f"Bearer {key}", "X-Corp-Team": team}
        server.script(
            [FunctionCall("exec_command", {"cmd": f'printf "%s\\n" "${KEY_VAR}"'})],
            [Message(f"The key is {key} and the team is {team}.")],
        )
        daemon = codex_daemon_with(data_dir, **{KEY_VAR: key, TEAM_VAR: team}).start()
        try:
            run = daemon.create(corp_body(tmp_path, server, agent))
            body = wait_terminal(daemon, run["id"])
            with daemon.client() as http:
                surfaces = {
                    "status body": http.get(f"/api/runs/{run['id']}").text,
                    "run list": http.get("/api/runs").text,
                    "events page": http.get(
                        f"/api/runs/{run['id']}/events", params={"format": "json"}
                    ).text,
                    "SSE": http.get(f"/api/runs/{run['id']}/events").text,
                }
        finally:
            daemon.stop()
        seen = list(server.seen_headers)
    assert body["status"] == "succeeded", body
    # Every model request carried the daemon's key and header: the fake refuses any other.
    assert seen and all(h == server.expect_headers for h in seen)
    log_text = Path(body["eventsLogPath"]).read_text()
    assert REDACTED in log_text
    surfaces["events.jsonl"] = log_text
    surfaces["daemon log"] = daemon.log_path.read_text()
    files = {path: blob.decode(errors="replace") for path, blob in files_under(data_dir)}
    files["SQLite rows"] = sqlite_dump(data_dir / DB_NAME).decode(errors="replace")
    leaks = [
        (where, label)
        for where, text in {**surfaces, **files}.items()
        for label, value in (("key", key), ("team", team))
        if value in text
    ]
    assert leaks == []


@pytest.mark.needs_cli("codex")
@pytest.mark.parametrize("agent", AGENTS)
def test_without_the_variable_the_run_fails_before_codex_starts_and_names_it(
    agent: str, tmp_path: Path, data_dir: Path
) -> None:
    """A daemon without the provider's env_key: PROVIDER_CREDENTIALS_MISSING at once, naming
    the variable and the provider, never `codex login`; no child, no model request."""
    with ResponsesServer() as server:
        daemon = codex_daemon_with(data_dir).start()
        try:
            run = daemon.create(corp_body(tmp_path, server, agent))
            body = wait_terminal(daemon, run["id"])
            with daemon.client() as http:
                page = http.get(f"/api/runs/{run['id']}/events", params={"format": "json"})
        finally:
            daemon.stop()
        requests = list(server.seen_headers)
    assert (body["status"], body["errorCode"], body["retryable"]) == (
        "failed",
        "PROVIDER_CREDENTIALS_MISSING",
        False,
    )
    assert KEY_VAR in body["error"] and PROVIDER_NAME in body["error"]
    assert PROVIDER_ID in body["error"] and "codex login" not in body["error"]
    events = page.json()["items"]
    assert [e["event"] for e in events if e["event"] == "start"] == []
    assert body.get("childPid") is None and requests == []


@pytest.mark.needs_cli("codex")
@pytest.mark.parametrize("agent", AGENTS)
def test_a_key_the_provider_refuses_names_the_provider_and_the_variable(
    agent: str, tmp_path: Path, data_dir: Path
) -> None:
    """A wrong key stays PROVIDER_AUTH_FAILED; the error says which provider refused which
    variable's key, not `codex login`, and does not carry the key."""
    wrong = f"corp-{uuid.uuid4().hex}"
    with ResponsesServer() as server:
        server.expect_headers = {"Authorization": "Bearer the-right-key"}
        daemon = codex_daemon_with(data_dir, **{KEY_VAR: wrong, TEAM_VAR: "platform"}).start()
        try:
            run = daemon.create(corp_body(tmp_path, server, agent))
            body = wait_terminal(daemon, run["id"])
        finally:
            daemon.stop()
        refused = list(server.seen_headers)
    assert refused and refused[0]["Authorization"] == f"Bearer {wrong}"
    assert (body["status"], body["errorCode"]) == ("failed", "PROVIDER_AUTH_FAILED"), body
    assert KEY_VAR in body["error"] and PROVIDER_NAME in body["error"]
    assert "codex login" not in body["error"] and wrong not in body["error"]


# --pass-env and Claude Code -------------------------------------------------------------------

# Prints each named variable reversed (proof it arrived) and raw (which must be redacted).
ECHO_ENV = """\
import os, sys
for name in sys.argv[1:]:
    value = os.environ.get(name)
    print(name, "absent" if value is None else "reversed=" + value[::-1])
    if value is not None:
        print(name, "raw=" + value)
"""


def test_pass_env_names_from_the_flag_and_the_variable_reach_any_agent(
    tmp_path: Path, data_dir: Path
) -> None:
    """Invariant 8: `serve --pass-env` and OD_RUNS_PASS_ENV add variables to a `command`
    child, scrubbed where it prints them; a variable nobody named stays behind."""
    flag_value, listed_value = f"flag-{uuid.uuid4().hex}", f"listed-{uuid.uuid4().hex}"
    script = write_script(tmp_path, "echo_env.py", ECHO_ENV)
    daemon = Daemon(data_dir, None, "--pass-env", "CORP_FLAG_SETTING")
    daemon.env.update(
        {
            PASS_ENV: "CORP_LISTED_SETTING, ",
            "CORP_FLAG_SETTING": flag_value,
            "CORP_LISTED_SETTING": listed_value,
            "CORP_UNNAMED_SETTING": "never-passed-value",
        }
    )
    daemon.start()
    names = ["CORP_FLAG_SETTING", "CORP_LISTED_SETTING", "CORP_UNNAMED_SETTING"]
    try:
        run = daemon.create(
            {"agentId": "command", "command": [sys.executable, str(script), *names]}
        )
        body = wait_terminal(daemon, run["id"])
        with daemon.client() as http:
            page = http.get(f"/api/runs/{run['id']}/events", params={"format": "json"}).json()
    finally:
        daemon.stop()
    assert body["status"] == "succeeded", body
    lines = [e["data"]["text"] for e in page["items"] if e["event"] == "stdout"]
    assert lines == [
        f"CORP_FLAG_SETTING reversed={flag_value[::-1]}",
        f"CORP_FLAG_SETTING raw={REDACTED}",
        f"CORP_LISTED_SETTING reversed={listed_value[::-1]}",
        f"CORP_LISTED_SETTING raw={REDACTED}",
        "CORP_UNNAMED_SETTING absent",
    ]


# A stand-in for Claude Code that writes the environment it was given to a file, then exits.
DUMP_ENV = """\
#!{python}
import json, os
with open({path!r}, "w") as out:
    json.dump(dict(os.environ), out)
"""

BEDROCK = {
    "CLAUDE_CODE_USE_BEDROCK": "1",
    "AWS_REGION": "eu-west-3",
    "AWS_PROFILE": "corp-bedrock",
    "AWS_ACCESS_KEY_ID": "AKIACORPEXAMPLE0001",
    "AWS_SECRET_ACCESS_KEY": "corp-secret-access-key-example",
    "AWS_SESSION_TOKEN": "corp-session-token-example",
    "AWS_BEARER_TOKEN_BEDROCK": "corp-bedrock-bearer-example",
    "ANTHROPIC_MODEL": "eu.anthropic.claude-sonnet-4-5",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL": "eu.anthropic.claude-haiku-4-5",
}


@pytest.mark.anyio
async def test_claude_code_gets_the_bedrock_variables_of_the_daemon(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claude Code on Bedrock: CLAUDE_CODE_USE_BEDROCK, the AWS_* credentials and region and
    the model pins reach the child; an unrelated variable of the daemon does not."""
    dump = tmp_path / "claude-env.json"
    fake = write_script(tmp_path, "claude", DUMP_ENV.format(python=sys.executable, path=str(dump)))
    fake.chmod(0o755)
    monkeypatch.setenv(CLAUDE_BIN_ENV, str(fake))
    monkeypatch.setenv("CORP_UNRELATED_SETTING", "stays-in-the-daemon")
    for name, value in BEDROCK.items():
        monkeypatch.setenv(name, value)
    async with open_service(data_dir) as service:
        await run_to_end(service, RunCreate(agentId="claude", prompt="hi", cwd=str(tmp_path)))
    seen = json.loads(await anyio.Path(dump).read_text())
    assert {name: seen.get(name) for name in BEDROCK} == BEDROCK
    assert "CORP_UNRELATED_SETTING" not in seen


# Resolving the Codex configuration -------------------------------------------------------------

GATEWAY = """\
model_provider = "gw"

[model_providers.gw]
name = "Gateway"
base_url = "https://gw.example.test/v1"
env_key = "GW_KEY"
env_http_headers = { "X-Org" = "GW_ORG", "X-Project" = "GW_PROJECT" }

[model_providers.other]
name = "Other"
env_key = "OTHER_KEY"

[profiles.legacy]
model_provider = "other"
"""


def test_the_selected_provider_names_its_key_and_header_variables(tmp_path: Path) -> None:
    """config.toml's model_provider table gives env_key and the env_http_headers variables;
    a legacy [profiles.x] table selects nothing (Codex 0.169 ignores or refuses it)."""
    home = write_config(tmp_path, GATEWAY)
    provider = codex_provider(home)
    assert (provider.id, provider.name, provider.env_key) == ("gw", "Gateway", "GW_KEY")
    assert provider.header_env == ("GW_ORG", "GW_PROJECT")
    assert str(home / "config.toml") in provider.label()


def test_a_profile_file_layers_over_config_toml_and_can_switch_the_provider(
    tmp_path: Path,
) -> None:
    """`-p fast` reads fast.config.toml over config.toml (tables merged key by key); a
    profile without a file changes nothing, as in Codex."""
    home = write_config(tmp_path, GATEWAY)
    write_config(home, 'model_provider = "other"\n', "fast.config.toml")
    write_config(home, '[model_providers.gw]\nenv_key = "GW_KEY_2"\n', "rotated.config.toml")
    assert codex_provider(home, "fast").env_key == "OTHER_KEY"
    assert str(home / "fast.config.toml") in codex_provider(home, "fast").label()
    rotated = codex_provider(home, "rotated")
    assert (rotated.env_key, rotated.name, rotated.header_env) == (
        "GW_KEY_2",
        "Gateway",
        ("GW_ORG", "GW_PROJECT"),
    )
    assert codex_provider(home, "no-such-profile").env_key == "GW_KEY"


def test_a_provider_without_a_table_or_without_a_config_names_nothing(tmp_path: Path) -> None:
    """model_provider naming no [model_providers.x] table (Codex itself then refuses to start)
    and a missing config.toml (the built-in openai provider) require no variable."""
    home = write_config(tmp_path / "a", 'model_provider = "ghost"\n')
    ghost = codex_provider(home)
    assert (ghost.id, ghost.defined, ghost.env_key, ghost.header_env) == ("ghost", False, None, ())
    assert codex_credentials({"CODEX_HOME": str(home)}, environ={}).missing == []
    default = codex_provider(tmp_path / "empty")
    assert (default.id, default.env_key) == ("openai", None)
    broken = write_config(tmp_path / "b", "model_provider = [unclosed\n")
    assert codex_provider(broken).id == "openai"


def test_missing_key_fails_with_the_variable_and_the_provider(tmp_path: Path) -> None:
    """The env_key must be set and not blank (Codex's rule), in the daemon or the run's env;
    header variables are passed when set and only noted when not."""
    home = str(write_config(tmp_path, GATEWAY))
    for daemon_env in ({}, {"GW_KEY": "  "}):
        creds = codex_credentials({"CODEX_HOME": home}, environ=daemon_env)
        assert creds.missing == ["GW_KEY"]
        with pytest.raises(AgentFailure) as raised:
            creds.check()
        error = raised.value.error
        assert error.code == "PROVIDER_CREDENTIALS_MISSING" and not error.retryable
        assert "GW_KEY" in error.message and "'Gateway'" in error.message
        assert "[model_providers.gw]" in error.message and "codex login" not in error.message
    daemon_env = {"GW_KEY": "gw-key-value", "GW_ORG": "org-value", "UNRELATED": "x"}
    creds = codex_credentials({"CODEX_HOME": home}, environ=daemon_env)
    creds.check()
    assert creds.env == {"GW_KEY": "gw-key-value", "GW_ORG": "org-value"}
    assert creds.secrets == ["gw-key-value", "org-value"]
    assert creds.unset_headers == ["GW_PROJECT"]
    hint = creds.auth_hint()
    assert hint is not None and "GW_KEY, GW_ORG" in hint and "GW_PROJECT unset" in hint
    # A key in the run's own env counts; the daemon's copy is then not needed.
    from_run = codex_credentials({"CODEX_HOME": home, "GW_KEY": "run-key-value"}, environ={})
    assert from_run.missing == [] and "GW_KEY" not in from_run.env
    assert from_run.secrets == ["run-key-value"]


def test_codex_home_defaults_to_dot_codex_of_home_and_the_model_does_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CODEX_HOME the adapter reads ~/.codex of the child's HOME; a run's `model`
    leaves the provider as configured (Codex 0.169 never derives one from the model)."""
    write_config(tmp_path / ".codex", GATEWAY)
    monkeypatch.delenv("CODEX_HOME", raising=False)
    monkeypatch.setenv("GW_KEY", "gw-key-from-the-daemon")
    adapter = CodexAdapter(
        RunCreate(agentId="codex", model="some-other-model", env={"HOME": str(tmp_path)})
    )
    env = adapter.env()
    assert env["GW_KEY"] == "gw-key-from-the-daemon"
    assert adapter.secret_values() == ["gw-key-from-the-daemon"]
    monkeypatch.delenv("GW_KEY")
    with pytest.raises(AgentFailure):
        CodexAdapter(RunCreate(agentId="codex", env={"HOME": str(tmp_path)})).env()


def test_amazon_bedrock_passes_the_aws_variables(tmp_path: Path) -> None:
    """Codex's built-in amazon-bedrock provider reads AWS credentials: they are passed (the
    secret ones scrubbed), and none is required (~/.aws may hold them instead)."""
    home = str(write_config(tmp_path, 'model_provider = "amazon-bedrock"\n'))
    environ = {"AWS_REGION": "us-east-1", "AWS_SECRET_ACCESS_KEY": "aws-secret-value", "X": "y"}
    creds = codex_credentials({"CODEX_HOME": home}, environ=environ)
    assert creds.missing == [] and creds.secrets == ["aws-secret-value"]
    assert creds.env == {"AWS_REGION": "us-east-1", "AWS_SECRET_ACCESS_KEY": "aws-secret-value"}


def test_claude_variables_by_name_and_prefix_and_which_are_secrets() -> None:
    """Claude Code's provider settings pass; a region or a model name is not scrubbed, a key
    is, and a --pass-env variable always is."""
    environ = {
        "CLAUDE_CODE_USE_VERTEX": "1",
        "CLOUD_ML_REGION": "us-east5",
        "ANTHROPIC_VERTEX_PROJECT_ID": "corp-vertex-project",
        "GOOGLE_APPLICATION_CREDENTIALS": "/etc/corp/vertex-sa.json",
        "VERTEX_REGION_CLAUDE_4_5_SONNET": "europe-west1",
        "AWS_BEARER_TOKEN_BEDROCK": "bedrock-bearer-value",
        "CORP_EXTRA": "corp-extra-value",
        PASS_ENV: "CORP_EXTRA,CORP_ABSENT",
        "HOME_DIRECTORY_UNRELATED": "nope",
    }
    creds = claude_credentials({}, environ=environ)
    assert sorted(creds.env) == [
        "ANTHROPIC_VERTEX_PROJECT_ID",
        "AWS_BEARER_TOKEN_BEDROCK",
        "CLAUDE_CODE_USE_VERTEX",
        "CLOUD_ML_REGION",
        "CORP_EXTRA",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "VERTEX_REGION_CLAUDE_4_5_SONNET",
    ]
    assert sorted(creds.secrets) == [
        "/etc/corp/vertex-sa.json",
        "bedrock-bearer-value",
        "corp-extra-value",
    ]
    assert creds.missing == []
    assert pass_env_names({PASS_ENV: " A, B,,A "}) == ["A", "B"]


def test_codex_saying_a_variable_is_missing_is_not_a_refused_login(tmp_path: Path) -> None:
    """Codex's own "Missing environment variable" (the config changed after the check) is
    PROVIDER_CREDENTIALS_MISSING naming the variable, for both Codex adapters."""
    home = str(write_config(tmp_path, GATEWAY))
    creds = codex_credentials({"CODEX_HOME": home}, environ={"GW_KEY": "gw-key-value"})
    said = "Missing environment variable: `GW_KEY_NEW`."
    turn = classify_turn_error({"message": said}, None, 0, creds)
    lost = lost_session_error(None, 1, said, creds)
    adapter = CodexAdapter(RunCreate(agentId="codex", env={"CODEX_HOME": home, "GW_KEY": "v"}))
    adapter.provider_env()  # what RunService's load_credentials() does at create
    for error in (turn, lost, adapter.classify(said, 1)):
        assert error.code == "PROVIDER_CREDENTIALS_MISSING"
        assert "GW_KEY_NEW" in error.message and "'Gateway'" in error.message
        assert "codex login" not in error.message
