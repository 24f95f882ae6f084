"""Errors a caller must see, each with a stable code and an HTTP status; mapped in one place."""

from __future__ import annotations


class OdRunsError(Exception):
    """Base of every error that reaches a client."""

    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(OdRunsError):
    """The request is malformed (bad cursor, bad id, bad body)."""


class NotFound(OdRunsError):
    """No such run."""

    status = 404
    code = "NOT_FOUND"


class Conflict(OdRunsError):
    """The request contradicts what is stored (idempotency key reused with another payload)."""

    status = 409
    code = "IDEMPOTENCY_CONFLICT"


class Unavailable(OdRunsError):
    """The daemon cannot do this now (shutting down, storage failing)."""

    status = 503
    code = "UNAVAILABLE"


class Invalid(OdRunsError):
    """A field has a value the daemon cannot use (an agentId no adapter is registered for)."""

    status = 422
    code = "INVALID_REQUEST"
