"""Why a `codex app-server` turn failed, as a failure kind of failures.py a person can act on.

A failed turn carries a structured `codexErrorInfo` (a kind such as `usageLimitExceeded`,
or `{"httpConnectionFailed": {"httpStatusCode": 401}}`): the HTTP status decides first, then
the kind, and only an error without either is read by its text (the same patterns as the
exec adapter). A session lost mid-turn is a protocol error (garbage) or a dead process, whose
stderr may still say the login expired (seed 003: point at `codex login`, not at raw RPC).
"""

from __future__ import annotations

from typing import Any

from ..failures import failure, rate_limited_message
from ..models import RunError
from .codex_errors import (
    AUTH,
    HTTP_STATUS,
    MISSING_ENV,
    RATE,
    UNAVAILABLE,
    auth_failed_message,
    missing_env_failure,
)
from .credentials import Credentials
from .text import short

# codexErrorInfo kinds -> our failure kinds (a kind not here is read by its text).
INFO_KINDS = {
    "unauthorized": "PROVIDER_AUTH_FAILED",
    "usageLimitExceeded": "PROVIDER_RATE_LIMITED",
    "rateLimitExceeded": "PROVIDER_RATE_LIMITED",
    "serverOverloaded": "PROVIDER_UNAVAILABLE",
    "internalServerError": "PROVIDER_UNAVAILABLE",
    "httpConnectionFailed": "PROVIDER_UNAVAILABLE",
    "responseStreamConnectionFailed": "PROVIDER_UNAVAILABLE",
    "responseStreamDisconnected": "PROVIDER_UNAVAILABLE",
    "responseTooManyFailedAttempts": "PROVIDER_UNAVAILABLE",
    "contextWindowExceeded": "PROVIDER_REJECTED",
    "modelNotFound": "PROVIDER_REJECTED",
    "badRequest": "PROVIDER_REJECTED",
}
_TEXT_PATTERNS = (
    (AUTH, "PROVIDER_AUTH_FAILED"),
    (RATE, "PROVIDER_RATE_LIMITED"),
    (UNAVAILABLE, "PROVIDER_UNAVAILABLE"),
)


def classify_turn_error(
    error: dict[str, Any] | None,
    last_error: str | None,
    retries: int,
    credentials: Credentials | None = None,
) -> RunError:
    """The failure kind of a failed turn's error (or of the last error notification);
    credentials name the configured provider and its variables in an auth failure."""
    error = error or {}
    message = str(error.get("message") or last_error or "the turn failed")
    missing = MISSING_ENV.search(message)
    if missing:
        return missing_env_failure(missing.group(1), credentials)
    info = error.get("codexErrorInfo")
    status = _status_of(info) or _status_in(message)
    code = _kind_of_status(status) if status is not None else None
    if code is None:
        kind = info if isinstance(info, str) else next(iter(info), None) if info else None
        code = INFO_KINDS.get(str(kind))
    if code is None:
        details = f"{message} {error.get('additionalDetails') or ''}"
        code = next((c for pattern, c in _TEXT_PATTERNS if pattern.search(details)), None)
    http = f" (HTTP {status})" if status else ""
    if code == "PROVIDER_AUTH_FAILED":
        return failure(code, auth_failed_message(http, credentials))
    if code == "PROVIDER_RATE_LIMITED":
        return failure(code, rate_limited_message(http))
    if code == "PROVIDER_UNAVAILABLE":
        after = f" after {retries} retries" if retries else ""
        return failure(
            code, f"The model provider is unavailable{http}; Codex gave up{after}. Retry later."
        )
    if code == "PROVIDER_REJECTED":
        return failure(code, f"The model provider rejected the request{http}: {short(message)}")
    return failure("AGENT_EXITED", f"Codex reported the turn failed: {short(message)}")


def lost_session_error(
    garbage: str | None,
    returncode: int | None,
    stderr: str,
    credentials: Credentials | None = None,
) -> RunError:
    """Why a turn ended without turn/completed: garbage, a refused login, or a dead process."""
    if garbage is not None:
        return failure(
            "AGENT_PROTOCOL_ERROR",
            "The Codex app-server sent something that is not JSON-RPC; its session was "
            "retired and the next run starts a fresh process on the same thread.",
        )
    missing = MISSING_ENV.search(stderr)
    if missing:
        return missing_env_failure(missing.group(1), credentials)
    if AUTH.search(stderr):
        hint = credentials.auth_hint() if credentials is not None else None
        if hint is not None:
            return failure("PROVIDER_AUTH_FAILED", f"The Codex app-server stopped: {hint}.")
        return failure(
            "PROVIDER_AUTH_FAILED",
            "The Codex app-server stopped: the provider refused its credentials. Run "
            "`codex login` (or give the daemon the provider's API key) and retry.",
        )
    if returncode is None:
        how = "closed its output"
    elif returncode < 0:
        how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    return failure(
        "AGENT_EXITED",
        f"The Codex app-server {how} before the turn ended; the next run resumes the thread "
        "in a new process.",
        retryable=True,
    )


def _kind_of_status(status: int) -> str:
    if status in (401, 403):
        return "PROVIDER_AUTH_FAILED"
    if status == 429:
        return "PROVIDER_RATE_LIMITED"
    return "PROVIDER_UNAVAILABLE" if status >= 500 else "PROVIDER_REJECTED"


def _status_of(info: Any) -> int | None:
    """The HTTP status inside a codexErrorInfo like {"httpConnectionFailed": {...}}."""
    if isinstance(info, dict):
        for value in info.values():
            if isinstance(value, dict) and isinstance(value.get("httpStatusCode"), int):
                return int(value["httpStatusCode"])
    return None


def _status_in(message: str) -> int | None:
    match = HTTP_STATUS.search(message)
    return int(match.group(1)) if match else None
