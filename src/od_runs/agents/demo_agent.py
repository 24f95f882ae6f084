"""A pretend coding agent: prints a realistic session as JSON lines on stdout.

Run as `python -m od_runs.agents.demo_agent --events N --duration S [--fast]`, prompt on
stdin. It needs nothing installed, so a fresh daemon has something real to run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

OPENING = "I'll start by looking at the project layout, then make the change."
TOOL_OUTPUT = "README.md\npyproject.toml\nsrc/\ntests/\n"
CLOSING = (
    "Done. I read the layout, found where the change belongs and wrote it. "
    "Nothing else needed to change, and the tests pass. "
)


def session(prompt: str, events: int) -> list[dict[str, object]]:
    """Exactly `events` agent events: status, deltas, one tool call, deltas, final message."""
    task = " ".join(prompt.split())[:200] or "the task"
    head: list[dict[str, object]] = [{"type": "status", "text": f"Working on: {task}"}]
    head += [{"type": "text_delta", "delta": w + " "} for w in OPENING.split()]
    head += [
        {
            "type": "tool_call",
            "phase": "started",
            "callId": "call_1",
            "name": "shell",
            "summary": "ls",
            "input": {"command": ["ls"]},
        },
        {"type": "tool_output", "callId": "call_1", "text": TOOL_OUTPUT},
        {
            "type": "tool_call",
            "phase": "completed",
            "callId": "call_1",
            "name": "shell",
            "summary": "ls",
            "exitCode": 0,
            "output": TOOL_OUTPUT,
        },
    ]
    head = head[: max(events - 1, 0)]
    words = CLOSING.split()
    body_count = max(events - 1 - len(head), 0)
    body: list[dict[str, object]] = [
        {"type": "text_delta", "delta": words[i % len(words)] + " "} for i in range(body_count)
    ]
    answer = "".join(str(e["delta"]) for e in body) or CLOSING
    final = {"type": "message", "role": "assistant", "final": True, "text": answer.strip()}
    return [*head, *body, final]


def main(argv: list[str] | None = None) -> int:
    """Print the session, paced over --duration seconds unless --fast."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--fast", action="store_true", help="emit as fast as possible")
    # od-runs passes a per-run mark to put before every JSON line: it trusts marked lines
    # into the log as they are, and parses any other line first (agents/demo.py).
    parser.add_argument("--mark", default="")
    args = parser.parse_args(argv)
    mark = args.mark
    prompt = sys.stdin.read() if not sys.stdin.isatty() else ""
    out = sys.stdout
    if args.fast:
        # Big events counts: serialise the fixed part once and stream the deltas in bulk.
        items = session(prompt, min(args.events, 64))
        filler = [mark + json.dumps(e, separators=(",", ":")) + "\n" for e in items[:-1]]
        missing = args.events - len(items)
        delta = mark + '{"type":"text_delta","delta":"more "}\n'
        out.write("".join(filler))
        for start in range(0, missing, 4096):
            out.write(delta * min(4096, missing - start))
        out.write(mark + json.dumps(items[-1], separators=(",", ":")) + "\n")
        out.flush()
        return 0
    events = session(prompt, args.events)
    pause = args.duration / max(len(events), 1)
    started = time.monotonic()
    for index, event in enumerate(events):
        # Pace against the clock so slow writes do not stretch the session.
        delay = started + index * pause - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.write(mark + json.dumps(event, separators=(",", ":")) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
