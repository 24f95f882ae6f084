"""The real pinned Codex CLI pointed at the scripted Responses server.

Shared by the tests of the `codex` and `codex-app-server` adapters, tool bundles and the
`od-runs sessions` command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from od_runs.agents.codex import BINARY_ENV
from od_runs.models import RunCreate

from .conftest import Daemon
from .fakes.responses_server import Hold, ResponsesServer, write_codex_home

CODEX = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "codex"
APP_SERVER = "codex-app-server"


@dataclass
class Codex:
    """A scripted model, a scratch CODEX_HOME pointing at it, and a workspace."""

    server: ResponsesServer
    home: Path
    workdir: Path
    agent: str = "codex"
    holds: list[Hold] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """What the app-server needs: its home, the dummy key, a HOME of its own."""
        return {
            "CODEX_HOME": str(self.home),
            # Codex runs commands in login shells: keep the machine's profile out of tests.
            "HOME": str(self.workdir.parent / "home"),
            **self.server.env(),
        }

    def request(self, prompt: str = "Say hello.", **fields: Any) -> RunCreate:
        """A run of this agent that reaches the scripted model and nothing else; app-server
        runs belong to a conversation (conv-1 unless told)."""
        if self.agent == APP_SERVER:
            fields.setdefault("conversationId", "conv-1")
        return RunCreate(
            agentId=self.agent, prompt=prompt, cwd=str(self.workdir), env=self.env(), **fields
        )

    def hold(self, **fields: Any) -> Hold:
        """A response the server keeps open (released when the test ends)."""
        held = Hold(**fields)
        self.holds.append(held)
        return held


def make_codex(tmp_path: Path, server: ResponsesServer, agent: str = "codex", **home: Any) -> Codex:
    """A Codex whose home, workspace and HOME live under tmp_path."""
    for name in ("work", "home"):
        (tmp_path / name).mkdir(exist_ok=True)
    codex_home = write_codex_home(tmp_path / "codex-home", server, **home)
    return Codex(server, codex_home, tmp_path / "work", agent)


@contextmanager
def scripted_codex(tmp_path: Path, agent: str = "codex") -> Iterator[Codex]:
    """A Codex on a fresh scripted server; held responses are released on the way out.

    od-runs must also be told to spawn the pinned binary: BINARY_ENV set to CODEX, in the
    test's environment for an in-process service or in a daemon subprocess's env.
    """
    with ResponsesServer() as server:
        made = make_codex(tmp_path, server, agent)
        try:
            yield made
        finally:
            for held in made.holds:
                held.release()


def codex_daemon(data_dir: Path) -> Daemon:
    """A daemon (not started) whose codex adapters spawn the pinned binary."""
    daemon = Daemon(data_dir)
    daemon.env[BINARY_ENV] = str(CODEX)
    return daemon
