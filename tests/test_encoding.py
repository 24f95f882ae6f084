"""The cheap encoders behind every event line: compact JSON and the line's timestamp."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime

import pytest

from od_runs.encoding import compact_json, now_iso

VALUES: list[object] = [
    {"text": "t=1764683412.123456 n=12345"},
    {"text": 'é ü 漢字 \u2028 \u2029 \x00 \x1f \t \n \r " \\ /', "partial": True},
    {"nested": [1, 2.5, -0.0, 1e300, None, True, False, {"a": []}], "": {}},
    {"big": 2**80, "neg": -(2**70), "emoji": "🙂"},
    "a bare string \u0007",
    [],
    12,
    None,
]


@pytest.mark.parametrize("value", VALUES)
def test_compact_json_is_exactly_json_dumps(value: object) -> None:
    """The log's bytes must not change with the encoder: byte for byte json.dumps's."""
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert compact_json(value) == expected
    assert json.loads(compact_json(value)) == value


def test_compact_json_refuses_what_json_dumps_refuses() -> None:
    """An object JSON cannot hold is an error, not a silently wrong line."""
    with pytest.raises(TypeError):
        compact_json({"when": datetime.now(UTC)})
    assert compact_json({"x": math.inf}) == json.dumps({"x": math.inf}, separators=(",", ":"))


def test_now_iso_is_utc_with_milliseconds_and_tells_the_time() -> None:
    """The ts format readers parse; across a second boundary it still tells the time."""
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    deadline = time.monotonic() + 3
    seconds = set()
    while len(seconds) < 2 and time.monotonic() < deadline:
        before = time.time()
        stamp = now_iso()
        after = time.time()
        assert pattern.match(stamp), stamp
        told = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before - 0.001 <= told.timestamp() <= after
        seconds.add(stamp[:19])
    assert len(seconds) == 2  # the cached second moved on with the clock
