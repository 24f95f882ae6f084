"""Failure kinds: the one table every failed run's `errorCode` comes from.

A failed run has a status body with `errorCode` (below), `retryable` (would the same
request, sent again later, plausibly succeed?) and `error`, one line a person can act on.
`canceled` is a status, never an error.

| errorCode             | retry | when                                                       |
|-----------------------|-------|------------------------------------------------------------|
| AGENT_NOT_FOUND       | no    | the agent's program (or its interpreter) is not installed  |
| AGENT_SPAWN_FAILED    | no    | the program exists but cannot be started (permissions)     |
| AGENT_EXITED          | no    | non-zero exit; killed by a signal nobody sent: yes         |
| AGENT_STALLED         | yes   | no output at all for `idleTimeoutMs`; any output resets it |
| AGENT_TIMEOUT         | no    | the run outlived its `timeoutMs` (only when one was set)   |
| AGENT_PROTOCOL_ERROR  | no    | the agent ended without its terminal event, or garbled it  |
| AGENT_INCOMPLETE      | no    | the agent ended its turn unfinished (token or turn limit,  |
|                       |       | refusal, or it canceled the turn itself)                   |
| PERMISSION_DENIED     | no    | the agent gave up after `approvalPolicy` denied a request  |
| TOOL_SERVER_FAILED    | no    | a tool-bundle MCP server could not be started              |
| PROVIDER_AUTH_FAILED  | no    | the model provider refused the credentials (401/403)       |
| PROVIDER_CREDENTIALS_MISSING | no | the agent's config names a key variable the daemon     |
|                       |       | lacks; fails before the spawn, naming variable and provider|
| PROVIDER_RATE_LIMITED | yes   | the provider said 429, or a usage limit is reached         |
| PROVIDER_UNAVAILABLE  | yes   | 5xx or a dropped stream, after the agent's own retries     |
| PROVIDER_REJECTED     | no    | any other refusal (4xx: context too long, unknown model)   |
| WORKSPACE_FAILED      | no    | the run's git worktree could not be made (see the error)   |
| SESSION_RESUME_FAILED | no    | the session to continue is gone; never silently a new one  |
| LOG_WRITE_FAILED      | yes   | the run's events.jsonl could not be written                |
| DAEMON_RESTARTED      | yes   | the daemon stopped (or crashed) while the run was active   |
| INTERNAL_ERROR        | no    | a bug in od-runs; the daemon log has the traceback         |
"""

from __future__ import annotations

from .models import RunError

RETRYABLE: dict[str, bool] = {
    "AGENT_NOT_FOUND": False,
    "AGENT_SPAWN_FAILED": False,
    "AGENT_EXITED": False,
    "AGENT_STALLED": True,
    "AGENT_TIMEOUT": False,
    "AGENT_PROTOCOL_ERROR": False,
    "AGENT_INCOMPLETE": False,
    "PERMISSION_DENIED": False,
    "TOOL_SERVER_FAILED": False,
    "PROVIDER_AUTH_FAILED": False,
    "PROVIDER_CREDENTIALS_MISSING": False,
    "PROVIDER_RATE_LIMITED": True,
    "PROVIDER_UNAVAILABLE": True,
    "PROVIDER_REJECTED": False,
    "WORKSPACE_FAILED": False,
    "SESSION_RESUME_FAILED": False,
    "LOG_WRITE_FAILED": True,
    "DAEMON_RESTARTED": True,
    "INTERNAL_ERROR": False,
}


def failure(code: str, message: str, *, retryable: bool | None = None) -> RunError:
    """A RunError of a kind from the table, with the table's retryable unless overridden."""
    if code not in RETRYABLE:
        raise ValueError(f"not a documented failure kind: {code}")
    return RunError(
        code=code,
        message=message,
        retryable=RETRYABLE[code] if retryable is None else retryable,
    )


class AgentFailure(Exception):
    """Raised where a run fails before it has a child to watch (a session that cannot resume)."""

    def __init__(self, error: RunError) -> None:
        super().__init__(error.message)
        self.error = error


def rate_limited_message(http: str) -> str:
    """The one-line error of PROVIDER_RATE_LIMITED; http is e.g. " (HTTP 429)" or ""."""
    return (
        f"The model provider is rate limiting requests{http}. Wait, or check the account's "
        "usage limits, then retry."
    )
