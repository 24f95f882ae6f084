"""A tiny scripted ACP agent for tests: raw JSON lines on stdio, no library, so it starts fast.

    python acp_agent.py MODE RECORD_FILE

It answers `initialize` and `session/new` (unless MODE is `mute`: it answers nothing), then
on `session/prompt`, by MODE:

- `answer`: streams "Hello from the fake agent." as two message chunks and ends the turn;
  it exits as soon as its stdin closes.
- `ignore-cancel`: sends a plan, never answers; notes `session/cancel` and ignores it.
- `die`: exits with code 3 without answering.
- `load`: like `answer`, but it offers `loadSession`; `session/load` first retells an
  earlier exchange ("Old question." / "Old answer.") as updates, as ACP has it.

RECORD_FILE gets `method NAME` for every message received, `signal NAME` for SIGTERM and
`eof` when stdin closes, in order.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# Run as a script: its own directory is on sys.path.
from record import open_record

SESSION = "fake-session"


def main() -> None:
    mode, record_path = sys.argv[1], sys.argv[2]
    note = open_record(record_path)

    def send(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        sys.stdout.flush()

    def update(change: dict[str, Any]) -> None:
        send({"method": "session/update", "params": {"sessionId": SESSION, "update": change}})

    for line in sys.stdin:
        message = json.loads(line)
        method = message.get("method")
        note(f"method {method}")
        if mode == "mute":
            continue
        if method == "initialize":
            caps = {"loadSession": True} if mode == "load" else {}
            send({"id": message["id"], "result": {"protocolVersion": 1, "agentCapabilities": caps}})
        elif method == "session/new":
            send({"id": message["id"], "result": {"sessionId": SESSION}})
        elif method == "session/load":
            for kind, text in (("user", "Old question."), ("agent", "Old answer.")):
                chunk = {"type": "text", "text": text}
                update({"sessionUpdate": f"{kind}_message_chunk", "content": chunk})
            send({"id": message["id"], "result": {}})
        elif method == "session/prompt":
            if mode == "die":
                sys.exit(3)
            if mode == "ignore-cancel":
                # Show that the turn runs (a plan), then never finish it.
                entry = {"content": "think forever", "priority": "high", "status": "in_progress"}
                update({"sessionUpdate": "plan", "entries": [entry]})
            if mode in ("answer", "load"):
                for text in ("Hello from ", "the fake agent."):
                    chunk = {"type": "text", "text": text}
                    update({"sessionUpdate": "agent_message_chunk", "content": chunk})
                send({"id": message["id"], "result": {"stopReason": "end_turn"}})
    note("eof")


if __name__ == "__main__":
    main()
