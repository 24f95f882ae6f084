"""What each event line costs to make: its compact JSON and its timestamp.

Both run once per event (JSON) or per batch (timestamp) on the event loop, so they are built
to be cheap: the JSON encoder is made once instead of per call, and the timestamp's date
and time of day are formatted once a second.
"""

from __future__ import annotations

import json
import json.encoder
import time
from collections.abc import Callable


def _compact_encoder() -> Callable[[object], str]:
    """json.dumps(value, ensure_ascii=False, separators=(",", ":")), made once.

    json.dumps with arguments builds an encoder (and its C scanner) on every call: a third of
    the cost of a short event. The C encoder is reused here when the interpreter has it.
    """
    python = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return python.encode
    try:
        c_encode = make(
            None, python.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
        )
    except TypeError:  # another interpreter's signature: stay with the public path
        return python.encode

    def encode(value: object) -> str:
        if isinstance(value, str):
            return json.encoder.encode_basestring(value)
        return "".join(c_encode(value, 0))

    return encode


compact_json = _compact_encoder()


class _Clock:
    """now_iso(): the ISO-8601 UTC time with milliseconds, its seconds formatted once."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        """The ts of a line: ISO-8601 UTC with milliseconds."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return f"{self._prefix}{int((now - second) * 1000):03d}Z"


now_iso: Callable[[], str] = _Clock()

__all__ = ["compact_json", "now_iso"]
