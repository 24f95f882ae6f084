"""The built-in `demo` agent: a child process that streams a realistic agent session."""

from __future__ import annotations

import json
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
        """Our own child prints one JSON object per line: keep its text, skip a re-encode.

        A line goes into the log as it came only once it is known to be JSON (invariant 4:
        every log line is a JSON object); anything else becomes a stdout event.
        """
        if stream == "stderr":
            return super().translate(stream, lines)
        raw = RawJSON
        objects = [
            text for text, partial in lines if text[-1:] == "}" and text[:1] == "{" and not partial
        ]
        # One parse for the whole batch (the usual case: all of it is JSON), per line if not.
        valid = set(objects) if _all_json(objects) else {t for t in objects if _all_json([t])}
        return [
            ("agent", raw(text))
            if not partial and text in valid
            else ("stdout", {"text": text, "partial": partial})
            for text, partial in lines
        ]


def _all_json(texts: list[str]) -> bool:
    """True if every text is a JSON object (parsed together, in one call)."""
    if not texts:
        return True
    try:
        values = json.loads("[" + ",".join(texts) + "]")
    except ValueError:
        return False
    return len(values) == len(texts) and all(isinstance(v, dict) for v in values)
