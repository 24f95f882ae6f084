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
import subprocess
import sys

# Run as a script: its own directory is on sys.path.
from record import open_record


def main() -> None:
    record_path, argv = sys.argv[1], sys.argv[2:]
    note = open_record(record_path)
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
