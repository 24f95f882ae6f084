"""Which of the daemon's variables carry an agent's provider credentials, and whether they are set.

An agent child gets a fixed allowlist (process.py, plus each adapter's INHERITED_ENV). A user
whose model provider is not the agent's default keeps its key in a variable that allowlist
cannot know, so this module names the extra variables per agent:

- Codex (`codex`, `codex-app-server`): the provider that `$CODEX_HOME/config.toml` selects
  (`model_provider`, default `openai`), layered under `$CODEX_HOME/<profile>.config.toml`
  when a profile is selected with `-p`. Its `env_key` is required: Codex refuses to call the
  provider without it (a blank value counts as unset, as in Codex), so a run whose daemon
  lacks it fails before the spawn with PROVIDER_CREDENTIALS_MISSING. The variables named in
  its `env_http_headers` are passed when set; Codex leaves such a header out when its
  variable is unset, so they are not required. The built-in `amazon-bedrock` provider reads
  the AWS variables. What Codex 0.169 does not do, this does not either: the run's `model`
  never changes the provider, project-local `.codex/config.toml` cannot set it, and the
  legacy `profile = "x"` / `[profiles.x]` selectors are refused by Codex itself.
- Claude Code: the variables of its third-party providers (Bedrock, Vertex, Foundry, a
  gateway) and model pins, by name and by prefix (AWS_*).
- Any agent: the names from `od-runs serve --pass-env NAME` / OD_RUNS_PASS_ENV (a comma-
  separated list); serve adds its --pass-env names to OD_RUNS_PASS_ENV, so this module has
  one place to read them.

A run's own `env` wins over the daemon's and counts as having the variable. The values of the
variables passed here (but the non-secret settings of the fixed Claude list, such as a region)
are secrets: RunService's scrubber hides them wherever the agent prints them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..failures import AgentFailure, failure
from ..redact import SECRET_NAME

PASS_ENV = "OD_RUNS_PASS_ENV"
# Codex's providers that config.toml cannot redefine; only amazon-bedrock reads variables
# the generic Codex allowlist does not already carry (openai's key is OPENAI_API_KEY).
CODEX_BUILTIN_PROVIDERS = ("openai", "ollama", "lmstudio", "oss", "amazon-bedrock")
DEFAULT_CODEX_PROVIDER = "openai"
AWS_PREFIX = "AWS_"
# What Claude Code reads to reach a provider other than Anthropic's API (see its docs on
# Bedrock, Vertex AI, Microsoft Foundry and LLM gateways), besides the AWS_* variables.
CLAUDE_PROVIDER_ENV = (
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "CLAUDE_CODE_USE_GATEWAY",
    "CLAUDE_CODE_SKIP_BEDROCK_AUTH",
    "CLAUDE_CODE_SKIP_VERTEX_AUTH",
    "CLAUDE_CODE_SKIP_FOUNDRY_AUTH",
    "ANTHROPIC_BEDROCK_BASE_URL",
    "ANTHROPIC_VERTEX_BASE_URL",
    "ANTHROPIC_VERTEX_PROJECT_ID",
    "ANTHROPIC_FOUNDRY_API_KEY",
    "ANTHROPIC_FOUNDRY_AUTH_TOKEN",
    "ANTHROPIC_FOUNDRY_BASE_URL",
    "ANTHROPIC_FOUNDRY_RESOURCE",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION",
    "ANTHROPIC_BETAS",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
    "MAX_THINKING_TOKENS",
    "DISABLE_PROMPT_CACHING",
    "CLOUD_ML_REGION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CONFIG",
)
# Families Claude Code reads by prefix: AWS credentials and settings, the per-model Vertex
# regions (VERTEX_REGION_CLAUDE_...), and the model pins (ANTHROPIC_DEFAULT_SONNET_MODEL...).
CLAUDE_PROVIDER_PREFIXES = (AWS_PREFIX, "VERTEX_REGION_", "ANTHROPIC_DEFAULT_")


@dataclass(frozen=True)
class CodexProvider:
    """The model provider a Codex configuration selects, and the variables it reads."""

    id: str
    name: str
    # Where the selection came from, for messages ("/home/u/.codex/config.toml").
    source: str
    env_key: str | None = None
    header_env: tuple[str, ...] = ()
    # Read when set, never required (AWS credentials may live in ~/.aws instead).
    prefixes: tuple[str, ...] = ()
    defined: bool = True

    def label(self) -> str:
        """How a message names the provider: its name and its table."""
        if self.id in CODEX_BUILTIN_PROVIDERS:
            return f"{self.name!r} (Codex's built-in provider {self.id!r})"
        return f"{self.name!r} ([model_providers.{self.id}] in {self.source})"


@dataclass
class Credentials:
    """What a run's child gets from the daemon for its provider, and what it lacks."""

    env: dict[str, str] = field(default_factory=dict)
    # Values to scrub (the env's values, but settings that are not secrets).
    secrets: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    provider: CodexProvider | None = None
    # Header variables of the provider that neither the daemon nor the run has.
    unset_headers: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Raise AgentFailure (PROVIDER_CREDENTIALS_MISSING) if a required variable is unset."""
        if not self.missing:
            return
        names = ", ".join(self.missing)
        where = f"The model provider {self.provider.label()}" if self.provider else "The agent"
        raise AgentFailure(
            failure(
                "PROVIDER_CREDENTIALS_MISSING",
                f"{where} reads its API key from {names}, which the od-runs daemon does not "
                f"have: set {names} in the environment `od-runs serve` starts in (or in the "
                "run's env) and start the run again.",
            )
        )

    def auth_hint(self) -> str | None:
        """What a refusal by a configured provider should say it was given; None for the default
        provider (its login is `codex login`'s business)."""
        provider = self.provider
        if provider is None or (provider.env_key is None and not provider.header_env):
            return None
        used = [provider.env_key] if provider.env_key else []
        used += [n for n in provider.header_env if n not in self.unset_headers]
        said = f"the model provider {provider.label()} refused the credentials"
        if used:
            said += f" from {', '.join(used)}"
        if self.unset_headers:
            said += f" ({', '.join(self.unset_headers)} unset, so that header was not sent)"
        return said


# Configuration ----------------------------------------------------------------------------


def codex_home(env: Mapping[str, str]) -> Path:
    """The CODEX_HOME a child with env uses: its CODEX_HOME, else ~/.codex of its HOME."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    return Path(env.get("HOME") or str(Path.home())) / ".codex"


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; {} when it does not exist or does not parse (Codex says why)."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def codex_config(home: Path, profile: str | None = None) -> dict[str, Any]:
    """config.toml with `<profile>.config.toml` layered on top, as Codex merges them."""
    config = read_toml(home / "config.toml")
    if profile:
        config = _merge(config, read_toml(home / f"{profile}.config.toml"))
    return config


def codex_provider(home: Path, profile: str | None = None) -> CodexProvider:
    """The provider Codex selects from home's configuration (and profile, if given)."""
    config = codex_config(home, profile)
    chosen = config.get("model_provider")
    provider_id = chosen if isinstance(chosen, str) and chosen else DEFAULT_CODEX_PROVIDER
    source = str(home / "config.toml")
    if profile and "model_provider" in read_toml(home / f"{profile}.config.toml"):
        source = str(home / f"{profile}.config.toml")
    if provider_id in CODEX_BUILTIN_PROVIDERS:
        # config.toml cannot redefine these (Codex refuses to start if it tries).
        prefixes = (AWS_PREFIX,) if provider_id == "amazon-bedrock" else ()
        return CodexProvider(provider_id, provider_id, source, prefixes=prefixes)
    providers = config.get("model_providers")
    table = providers.get(provider_id) if isinstance(providers, dict) else None
    if not isinstance(table, dict):
        # Codex fails with "Model provider `x` not found"; no variable to name here.
        return CodexProvider(provider_id, provider_id, source, defined=False)
    name = table.get("name")
    env_key = table.get("env_key")
    headers = table.get("env_http_headers")
    return CodexProvider(
        id=provider_id,
        name=name if isinstance(name, str) and name else provider_id,
        source=source,
        env_key=env_key if isinstance(env_key, str) and env_key else None,
        header_env=tuple(
            v for v in (headers.values() if isinstance(headers, dict) else ()) if isinstance(v, str)
        ),
    )


def pass_env_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The extra variable names of --pass-env / OD_RUNS_PASS_ENV, in order, once each."""
    raw = (os.environ if environ is None else environ).get(PASS_ENV, "")
    return list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))


def add_pass_env(names: Iterable[str]) -> None:
    """Add names (from `serve --pass-env`) to OD_RUNS_PASS_ENV of this process."""
    merged = pass_env_names() + [n.strip() for n in names if n.strip()]
    if merged:
        os.environ[PASS_ENV] = ",".join(dict.fromkeys(merged))


# What a run gets --------------------------------------------------------------------------


def codex_credentials(
    run_env: Mapping[str, str],
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """The daemon's variables a Codex child needs for its configured provider, and gaps."""
    environ = os.environ if environ is None else environ
    # The child's CODEX_HOME: the run's, else the daemon's (HOME likewise).
    seen = {k: environ[k] for k in ("CODEX_HOME", "HOME") if k in environ} | dict(run_env)
    provider = codex_provider(codex_home(seen), profile)
    creds = _pass_env(run_env, environ)
    creds.provider = provider
    if provider.env_key is not None:
        if _has(provider.env_key, run_env, environ):
            _take(creds, provider.env_key, run_env, environ, secret=True)
        else:
            creds.missing.append(provider.env_key)
    for name in provider.header_env:
        if _has(name, run_env, environ):
            _take(creds, name, run_env, environ, secret=True)
        else:
            creds.unset_headers.append(name)
    for name in sorted(environ):
        if provider.prefixes and name.startswith(provider.prefixes):
            _take(creds, name, run_env, environ, secret=bool(SECRET_NAME.search(name)))
    return creds


def claude_credentials(
    run_env: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> Credentials:
    """The daemon's variables of Claude Code's third-party providers, plus --pass-env."""
    environ = os.environ if environ is None else environ
    creds = _pass_env(run_env, environ)
    for name in sorted(environ):
        if name in CLAUDE_PROVIDER_ENV or name.startswith(CLAUDE_PROVIDER_PREFIXES):
            # A region or a model name is no secret: scrubbing it would blank it everywhere.
            _take(creds, name, run_env, environ, secret=bool(SECRET_NAME.search(name)))
    return creds


def generic_credentials(
    run_env: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> Credentials:
    """Only the --pass-env variables (agents with no provider configuration of their own)."""
    return _pass_env(run_env, os.environ if environ is None else environ)


def _pass_env(run_env: Mapping[str, str], environ: Mapping[str, str]) -> Credentials:
    creds = Credentials()
    for name in pass_env_names(environ):
        if name in environ:
            # The user named it: we cannot tell a key from a setting, so it is hidden.
            _take(creds, name, run_env, environ, secret=True)
    return creds


def _has(name: str, run_env: Mapping[str, str], environ: Mapping[str, str]) -> bool:
    value = run_env.get(name, environ.get(name))
    return value is not None and bool(value.strip())


def _take(
    creds: Credentials,
    name: str,
    run_env: Mapping[str, str],
    environ: Mapping[str, str],
    *,
    secret: bool,
) -> None:
    """Pass name from the daemon (unless the run sets it itself) and note its value."""
    if name in run_env:
        value = run_env[name]
    elif name in environ:
        value = creds.env[name] = environ[name]
    else:
        return
    if secret and value not in creds.secrets:
        creds.secrets.append(value)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """top over base, tables merged key by key (how Codex layers a profile file)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
