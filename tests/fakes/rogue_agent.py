"""A misbehaving agent for the adapter contract tests: stands in for any adapter's program.

    python rogue_agent.py PROTOCOL MODE READY_FILE [ARG...]

PROTOCOL is how far it plays along before misbehaving: `lines` (an agent read line by line
from stdout: demo, command, codex, claude), `acp` (answers initialize and session/new), or
`app-server` (answers initialize, thread/start and turn/start, and says the turn started).
Extra ARGs (the adapter's own command line) are ignored. MODE `mute` says nothing at all,
not even to the handshake: it writes READY_FILE at once and leaves when its stdin closes
(`lines`: never, its stdin is only the prompt). The other MODEs, once the turn is under way:

- `fail`: says why on stderr and exits with code 3.
- `garbage`: prints lines that are not the protocol (plain text, text in braces, a JSON
  array, invalid UTF-8), then: `lines` exits 0; `acp` answers the turn normally (end_turn);
  `app-server` waits for its stdin to close.
- `hang`: ignores SIGTERM, starts a grandchild in its process group that ignores SIGTERM
  too, and never finishes the turn (nor exits when stdin closes): only SIGKILL ends it.

Once the turn is under way it writes READY_FILE, a JSON list of its pid and its
grandchild's, so a test knows when to act and which processes must be gone afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

GARBAGE = [b"this is not json\n", b"{not json either}\n", b"[1, 2, 3]\n", b"\xff\xfe\x00\x01\n"]
THREAD = "00000000-0000-4000-8000-00000000000a"
SESSION = "rogue-session"
# The grandchild: ignores SIGTERM and outlives its parent unless the group is killed.
STUBBORN = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.pause()"


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def under_way(mode: str, ready: Path) -> None:
    """The turn is running: misbehave as MODE says (returns only for `garbage`)."""
    pids = [os.getpid()]
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pids.append(subprocess.Popen([sys.executable, "-c", STUBBORN]).pid)
    ready.write_text(json.dumps(pids))
    if mode == "fail":
        sys.stderr.write("rogue: giving up on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    if mode == "garbage":
        for line in GARBAGE:
            sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        return
    # hang: keep stdin drained (an unread pipe must not be what stops us), never exit.
    threading.Thread(target=sys.stdin.read, daemon=True).start()
    while True:
        signal.pause()


def lines(mode: str, ready: Path) -> None:
    print("rogue: working", flush=True)
    under_way(mode, ready)


def acp(mode: str, ready: Path) -> None:
    for raw in sys.stdin:
        message = json.loads(raw)
        method = message.get("method")
        if method == "initialize":
            send({"id": message["id"], "result": {"protocolVersion": 1, "agentCapabilities": {}}})
        elif method == "session/new":
            send({"id": message["id"], "result": {"sessionId": SESSION}})
        elif method == "session/prompt":
            under_way(mode, ready)
            chunk = {"type": "text", "text": "Rogue answer."}
            update = {"sessionUpdate": "agent_message_chunk", "content": chunk}
            send({"method": "session/update", "params": {"sessionId": SESSION, "update": update}})
            send({"id": message["id"], "result": {"stopReason": "end_turn"}})


def app_server(mode: str, ready: Path) -> None:
    for raw in sys.stdin:
        message = json.loads(raw)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue  # `initialized` and other notifications
        if method == "initialize":
            send({"id": request_id, "result": {"userAgent": "rogue"}})
        elif method == "thread/start":
            send({"id": request_id, "result": {"thread": {"id": THREAD}}})
        elif method == "turn/start":
            send({"id": request_id, "result": {"turn": {"id": "turn-1"}}})
            started = {"threadId": THREAD, "turn": {"id": "turn-1"}}
            send({"method": "turn/started", "params": started})
            under_way(mode, ready)
        # Anything else (turn/interrupt, pings) goes unanswered.


def mute(protocol: str, ready: Path) -> None:
    ready.write_text(json.dumps([os.getpid()]))
    sys.stdin.buffer.read()
    while protocol == "lines":
        signal.pause()


def main() -> None:
    protocol, mode, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if mode == "mute":
        mute(protocol, ready)
        return
    {"lines": lines, "acp": acp, "app-server": app_server}[protocol](mode, ready)


if __name__ == "__main__":
    main()
