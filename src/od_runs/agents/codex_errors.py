"""What Codex's error messages say: the patterns both Codex adapters read them by.

codex.py (`codex exec`) classifies a failed run with them; app_server_errors.py falls back
on them for a failed app-server turn that carries no HTTP status or error kind.
"""

from __future__ import annotations

import re

from ..failures import failure
from ..models import RunError
from .credentials import Credentials

# A retry notice, "Reconnecting... 2/5": progress, not a failure.
RECONNECT = re.compile(r"^Reconnecting\.\.\.\s*(\d+)\s*/\s*(\d+)")
HTTP_STATUS = re.compile(r"\b([45]\d\d)\b")
# A tool-bundle server (required = true in the profile) that Codex could not start.
TOOL_SERVER = re.compile(r"required MCP servers failed to initialize: ([^\s:,]+)")
RESUME_GONE = re.compile(
    r"thread/resume|no rollout found|(?:thread|session|conversation) not found", re.I
)
AUTH = re.compile(
    r"\b40[13]\b|unauthori[sz]ed|forbidden|invalid[_ ]api[_ ]key|incorrect api key|"
    r"missing (?:environment variable|api key)|not logged in|log ?in again|sign in again|"
    r"refresh token|token (?:has )?expired|authenticat",
    re.I,
)
# Codex's own refusal to call a provider whose env_key is unset (our check comes first, but
# the config may change between the check and the spawn).
MISSING_ENV = re.compile(r"Missing environment variable: `([^`]+)`")
RATE = re.compile(r"\b429\b|too many requests|rate[_ -]?limit|usage limit|quota", re.I)
UNAVAILABLE = re.compile(
    r"\b5\d\d\b|service unavailable|internal server error|bad gateway|gateway timeout|"
    r"high demand|overloaded|stream disconnected|error sending request|connection (?:refused|"
    r"reset|closed)|timed out|timeout",
    re.I,
)


def auth_failed_message(http: str, credentials: Credentials | None) -> str:
    """PROVIDER_AUTH_FAILED's error: the configured provider and its variables, or `codex login`."""
    hint = credentials.auth_hint() if credentials is not None else None
    if hint is None:
        return (
            f"The model provider refused Codex's credentials{http}. Run `codex login` "
            "(or give the daemon the provider's API key) and start the run again."
        )
    return (
        f"{hint[0].upper()}{hint[1:]}{http}; check the key in the daemon's environment (or the "
        "run's env) and start the run again."
    )


def missing_env_failure(name: str, credentials: Credentials | None) -> RunError:
    """PROVIDER_CREDENTIALS_MISSING for a variable Codex itself found unset."""
    provider = credentials.provider if credentials is not None else None
    where = f"The model provider {provider.label()}" if provider else "Codex's model provider"
    return failure(
        "PROVIDER_CREDENTIALS_MISSING",
        f"{where} reads its API key from {name}, which Codex did not get: set {name} in the "
        "environment `od-runs serve` starts in (or in the run's env) and start the run again.",
    )
