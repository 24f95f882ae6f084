"""Adapters whose agent prints one JSON object a line on stdout (`codex exec`, `claude -p`).

What they share: stderr is kept as a bounded tail (a hint for classifying a failure, never
pasted into the error a user sees) and passed on as stderr events; stdout lines are
reassembled from the process layer's pieces (it splits lines at 64 KiB), parsed, and handed
one object at a time to translate_object(); what an adapter leaves out is counted and
summarised in one `suppressed` event at the end. Each adapter keeps its own mapping.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from typing import Any, ClassVar

from ..models import RunCreate
from .base import Adapter, EventItem, Stream
from .events import suppressed_events, warning_event
from .lines import OVERLONG, LineJoiner

# stderr lines kept to classify a failure.
STDERR_TAIL_LINES = 50


class JsonLinesAdapter(Adapter):
    """Reads its agent's stdout as JSON lines; a subclass maps one object at a time."""

    # How warnings name the agent, and what one object of its output is called.
    agent_name: ClassVar[str]
    object_noun: ClassVar[str] = "an event"

    def __init__(self, request: RunCreate) -> None:
        super().__init__(request)
        self.saw_json = False
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.suppressed: Counter[str] = Counter()
        self._lines = LineJoiner()
        self._warned: set[str] = set()
        # Warnings logged before the first output (bundle servers that could not be handed over).
        self._notes: list[EventItem] = []

    def translate(self, stream: Stream, lines: list[tuple[str, bool]]) -> list[EventItem]:
        """stderr: kept as a tail and passed on; stdout: JSON lines mapped object by object."""
        if stream == "stderr":
            self.stderr_tail.extend(text for text, partial in lines if not partial)
            return super().translate(stream, lines)
        out, self._notes = self._notes, []
        for text, partial in lines:
            whole = self._lines.feed(text, partial)
            if whole is OVERLONG:
                out.append(
                    warning_event(f"{self.agent_name} printed an over-long line; it was skipped.")
                )
            elif isinstance(whole, str):
                out += self.translate_line(whole)
        return out

    def translate_line(self, line: str) -> list[EventItem]:
        """One whole line of the agent's stdout as zero or more events."""
        if not line.strip():
            return []
        try:
            obj = json.loads(line)
        except ValueError:
            text = f"{self.agent_name} printed a line that is not JSON."
            return [warning_event(text, line=line[:500])]
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            text = f"{self.agent_name} printed JSON that is not {self.object_noun}."
            return [warning_event(text, line=line[:500])]
        self.saw_json = True
        return self.translate_object(obj)

    def translate_object(self, obj: dict[str, Any]) -> list[EventItem]:
        """One JSON object with a string `type` as zero or more events."""
        raise NotImplementedError

    def _unknown(self, key: str, text: str) -> list[EventItem]:
        """A warning the first time something unknown (by key) shows up; later, a count."""
        if key in self._warned:
            self.suppressed["unknown"] += 1
            return []
        self._warned.add(key)
        return [warning_event(text)]

    def finish_events(self) -> list[EventItem]:
        """One summary of what was left out, by kind (never the text itself)."""
        return suppressed_events(self.suppressed)
