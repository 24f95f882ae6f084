"""The built-in `demo` agent: a child process that streams a realistic agent session."""

from __future__ import annotations

import json
import secrets
import sys

from ..eventlog import RawJSON
from ..models import RunCreate
from .base import Adapter, EventItem, Stream


class DemoAdapter(Adapter):
    """Runs demo_agent.py and passes its JSON lines through as `agent` events."""

    agent_id = "demo"
    description = "built-in pretend agent that streams a realistic session (needs nothing)"

    def __init__(self, request: RunCreate) -> None:
        super().__init__(request)
        # Marks the lines of this run's own child (see translate); not a secret, a frame.
        self._mark = f"@{secrets.token_hex(4)}@"

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
        argv += ["--mark", self._mark]
        return argv

    def translate(self, stream: Stream, lines: list[tuple[str, bool]]) -> list[EventItem]:
        """Our own child marks each JSON line: keep its text as is, skip a re-encode.

        A line goes into the log as it came only if it carries the run's mark, or else once it
        parses as a JSON object (invariant 4: every log line is JSON); anything else becomes a
        stdout event. The mark costs a prefix test; parsing every line would cost a quarter of
        the ingest rate.
        """
        if stream == "stderr":
            return super().translate(stream, lines)
        raw, mark, cut = RawJSON, self._mark, len(self._mark)
        return [
            ("agent", raw(text[cut:]))
            if not partial and text.startswith(mark)
            else ("agent", raw(text))
            if not partial and text[-1:] == "}" and text[:1] == "{" and _is_json_object(text)
            else ("stdout", {"text": text, "partial": partial})
            for text, partial in lines
        ]


def _is_json_object(text: str) -> bool:
    """True if text parses as one JSON object."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
