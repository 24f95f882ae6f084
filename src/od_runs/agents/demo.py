"""The built-in `demo` agent: a child process that streams a realistic agent session."""

from __future__ import annotations

import sys

from ..eventlog import RawJSON
from .base import Adapter, EventItem, Stream


class DemoAdapter(Adapter):
    """Runs demo_agent.py and passes its JSON lines through as `agent` events."""

    agent_id = "demo"
    description = "built-in pretend agent that streams a realistic session (needs nothing)"

    def argv(self) -> list[str]:
        """python -m od_runs.agents.demo_agent with the run's demo options."""
        options = self.request.demo
        argv = [
            sys.executable,
            "-m",
            "od_runs.agents.demo_agent",
            "--events",
            str(options.events),
            "--duration",
            str(options.durationSeconds),
        ]
        if options.fast:
            argv.append("--fast")
        return argv

    def translate(self, stream: Stream, lines: list[tuple[str, bool]]) -> list[EventItem]:
        """Our own child prints one JSON object per line: keep its text, skip a re-encode."""
        if stream == "stderr":
            return super().translate(stream, lines)
        raw = RawJSON
        return [
            ("agent", raw(text))
            if text[-1:] == "}" and text[:1] == "{" and not partial
            else ("stdout", {"text": text, "partial": partial})
            for text, partial in lines
        ]
