"""Daemon settings: flags first, then OD_RUNS_* environment variables, then defaults."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7780
DEFAULT_DATA_DIR = "./runs_log"
# How long a daemon that `od-runs mcp` starts may sit idle (no active run, no request).
MCP_DAEMON_IDLE_EXIT = 15 * 60.0
# Conversations whose runs may execute at once (conversations.DEFAULT_LIMIT).
CONVERSATION_LIMIT = 8
# Several daemons on PostgreSQL: a daemon's claim on its runs lapses this long after its last
# heartbeat (it beats three times per lease), and another daemon concludes them (invariant 12).
LEASE_SECONDS = 15.0
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def env(name: str, default: str | None = None) -> str | None:
    """An OD_RUNS_* variable, or default."""
    return os.environ.get(f"OD_RUNS_{name}", default)


def user_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user data dir: $XDG_DATA_HOME/od-runs, else ~/.local/share/od-runs."""
    environ = os.environ if environ is None else environ
    xdg = environ.get("XDG_DATA_HOME", "")
    # The XDG spec says to ignore a relative value: it would depend on the current directory.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "od-runs"
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "od-runs"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseModel):
    """Everything the daemon needs to start."""

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    # postgresql://...: runs, sessions and events in PostgreSQL instead of od-runs.sqlite3.
    database_url: str | None = None
    # With a database: this daemon's name among the others (None: from host name and data dir),
    # the lease on the runs it executes, and how many runs it executes at once (None: no cap).
    worker_id: str | None = Field(default=None, min_length=1, max_length=128)
    lease_seconds: float = Field(default=LEASE_SECONDS, ge=1, le=3600)
    max_runs: int | None = Field(default=None, ge=1, le=100_000)
    token: str | None = None
    grace: float = Field(default=5.0, ge=0, le=600)
    max_conversations: int = Field(default=CONVERSATION_LIMIT, ge=1, le=10_000)
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    # Seconds with no active run and no request after which the daemon stops (None: never).
    idle_exit: float | None = Field(default=None, gt=0)
    # retention.py: seconds a finished run is kept (None: forever), and the free-space floor.
    retain: float | None = Field(default=None, gt=0)
    min_free: int = Field(default=1 << 30, ge=0)

    def check(self) -> None:
        """Refuse settings that would expose the daemon: a non-loopback bind needs a token."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"refusing to listen on {self.host}: a non-loopback address needs a token "
                "(--token or OD_RUNS_TOKEN)"
            )

    def base_url(self) -> str:
        """The URL clients use to reach this daemon."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"
