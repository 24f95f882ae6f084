"""Run a command with our stdin relayed to it, noting what came in and which signals arrived.

    python stdin_recorder.py RECORD_FILE COMMAND [ARG...]

RECORD_FILE gets one line per event, in the order the recorder saw them: `method NAME` for
each JSON-RPC request or notification on stdin, `signal NAME` for a signal, `eof` when stdin
closes. The command's stdout and stderr are the recorder's own, so the caller talks to it as
if it were the command. Both share the caller's process group: a signal to the group reaches
both, and the recorder notes it before it exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

_lock = threading.Lock()


def main() -> None:
    record_path, argv = sys.argv[1], sys.argv[2:]
    record = open(record_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def note(text: str) -> None:
        with _lock:
            record.write(text + "\n")
            record.flush()
            os.fsync(record.fileno())

    def on_signal(signum: int, frame: object) -> None:
        note(f"signal {signal.Signals(signum).name}")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    child = subprocess.Popen(argv, stdin=subprocess.PIPE)
    assert child.stdin is not None
    for line in sys.stdin.buffer:
        try:
            method = json.loads(line).get("method")
        except (ValueError, AttributeError):
            method = None
        if method:
            note(f"method {method}")
        child.stdin.write(line)
        child.stdin.flush()
    note("eof")
    child.stdin.close()
    sys.exit(child.wait())


if __name__ == "__main__":
    main()
