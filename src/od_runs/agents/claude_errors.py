"""Why a Claude Code run failed, as a failure kind of failures.py a person can act on.

Claude Code's result message (and the synthetic assistant message it prints for a failed
API call) may carry an HTTP status, an error kind, or only text: the status decides first,
then the kind, and only then the text (or, without any, the tail of stderr).
"""

from __future__ import annotations

import re
from typing import Any

from ..failures import failure, rate_limited_message
from ..models import RunError
from .fields import list_field
from .text import short

_AUTH = re.compile(
    r"\b40[13]\b|unauthori[sz]ed|forbidden|invalid[_ ](?:api[_ ])?key|not logged in|/login|"
    r"authenticat|oauth token|token (?:has )?expired",
    re.I,
)
_RATE = re.compile(r"\b429\b|too many requests|rate[_ -]?limit|usage limit", re.I)
_UNAVAILABLE = re.compile(
    r"\b5\d\d\b|overloaded|server[_ -]?error|service unavailable|connection (?:refused|reset|"
    r"error|closed)|econn|socket hang up|timed? ?out|network",
    re.I,
)
# The `error` kind Claude Code puts on its synthetic error message, by failure kind.
_ERROR_KINDS = {
    "authentication_failed": "PROVIDER_AUTH_FAILED",
    "oauth_org_not_allowed": "PROVIDER_AUTH_FAILED",
    "rate_limit": "PROVIDER_RATE_LIMITED",
    "server_error": "PROVIDER_UNAVAILABLE",
    "overloaded": "PROVIDER_UNAVAILABLE",
    "billing_error": "PROVIDER_REJECTED",
    "invalid_request": "PROVIDER_REJECTED",
}
# Results that are not provider errors: Claude Code stopped on a limit of its own.
_STOPPED = {
    "error_max_turns": "it reached its maximum number of turns",
    "error_max_budget_usd": "it reached its spending limit (--max-budget-usd)",
    "error_during_execution": "it failed while running",
}


def classify_result(
    result: dict[str, Any],
    api: dict[str, Any],
    returncode: int,
    *,
    stderr: str,
    resume: str | None,
    session_id: str | None,
    retries: int,
) -> RunError:
    """The failure kind of a failed result, from its HTTP status, error kind or text.

    `api` is what the synthetic API error message said ({status, kind, text}), `stderr` the
    tail of stderr, `resume` the session the run asked for and `session_id` the one it got.
    """
    errors = list_field(result, "errors")
    text = " ".join(
        str(t) for t in (result.get("result"), *errors, api.get("text")) if isinstance(t, str)
    )
    if resume is not None and session_id is None:
        return failure(
            "SESSION_RESUME_FAILED",
            f"Claude Code could not resume session {resume}: it no longer exists "
            "(sessions are kept per working directory under ~/.claude/projects). "
            "Start a new conversation to continue without it.",
        )
    status = int_or_none(result.get("api_error_status")) or int_or_none(api.get("status"))
    http = f" (HTTP {status})" if status else ""
    code = _kind(status, str(api.get("kind") or ""), text or stderr)
    if code == "PROVIDER_AUTH_FAILED":
        return failure(
            code,
            f"The model provider refused Claude Code's credentials{http}. Run `claude` "
            "and `/login` as the daemon's user (or give the daemon ANTHROPIC_API_KEY), "
            "then start the run again.",
        )
    if code == "PROVIDER_RATE_LIMITED":
        return failure(code, rate_limited_message(http))
    if code == "PROVIDER_UNAVAILABLE":
        after = f" after {retries} retries" if retries else ""
        return failure(
            code,
            f"The model provider is unavailable{http}; Claude Code gave up{after}. Retry later.",
        )
    if code == "PROVIDER_REJECTED":
        return failure(
            code, f"The model provider rejected the request{http}: {short(text or stderr)}"
        )
    stopped = _STOPPED.get(str(result.get("subtype") or ""))
    if stopped and result:
        detail = f": {short(text)}" if text else ""
        return failure("AGENT_EXITED", f"Claude Code stopped because {stopped}{detail}")
    if result.get("is_error"):
        return failure("AGENT_EXITED", f"Claude Code reported an error: {short(text)}")
    return failure("AGENT_EXITED", f"Claude Code exited with code {returncode}.")


def _kind(status: int | None, kind: str, text: str) -> str | None:
    """The failure kind an HTTP status, an error kind or the text points at, if any."""
    if status in (401, 403):
        return "PROVIDER_AUTH_FAILED"
    if status == 429:
        return "PROVIDER_RATE_LIMITED"
    if status is not None and status >= 500:
        return "PROVIDER_UNAVAILABLE"
    if status is not None and status >= 400:
        return "PROVIDER_REJECTED"
    if kind in _ERROR_KINDS:
        return _ERROR_KINDS[kind]
    for pattern, code in (
        (_AUTH, "PROVIDER_AUTH_FAILED"),
        (_RATE, "PROVIDER_RATE_LIMITED"),
        (_UNAVAILABLE, "PROVIDER_UNAVAILABLE"),
    ):
        if text and pattern.search(text):
            return code
    return None


def int_or_none(value: Any) -> int | None:
    """value if it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["classify_result", "int_or_none"]
