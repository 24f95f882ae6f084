"""The record file both fake stdio children keep: one line per thing they saw, in order.

Lines are `method NAME`, `signal NAME` or `eof`; each is fsynced at once, because the
child may be killed right after and the test reads the file to know what arrived.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


def open_record(path: str) -> Callable[[str], None]:
    """A `note(text)` appending to path; SIGTERM is noted, then the process exits 128+15."""
    record = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    lock = threading.Lock()

    def note(text: str) -> None:
        with lock:
            record.write(text + "\n")
            record.flush()
            os.fsync(record.fileno())

    def on_signal(signum: int, frame: object) -> None:
        note(f"signal {signal.Signals(signum).name}")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    return note
