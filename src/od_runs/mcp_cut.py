"""Events cut to fit: an event's data in parts, each with a marker saying how to get the rest.

mcp_budget.py decides what goes into a result; this module knows how big an event is as the
client receives it, and how to render it whole or as one part from a byte offset (never
splitting a UTF-8 character), with a `cut` marker naming the paging call and the log line.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from .models import Event

# A part of an event's data never shrinks below this, so paging always makes progress.
MIN_PART_BYTES = 256
# Data whose other fields (all but its longest string) exceed this is cut as JSON text.
SMALL_REST_BYTES = 1_024


def dumps_compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_size(value: Any) -> int:
    """Bytes of value as compact UTF-8 JSON, the way the SDK puts it on the wire."""
    return len(dumps_compact(value).encode("utf-8", "surrogatepass"))


def string_size(text: str) -> int:
    """Bytes text takes inside a JSON string, quotes excluded."""
    return json_size(text) - 2


class Cut(BaseModel):
    """What of an event's data a result left out, and how to read it."""

    field: str = Field(
        description="What was cut: `data.<key>` (that string of the event's data) or `data` "
        "(the data as JSON text, which `data` then holds a piece of)."
    )
    offset: int = Field(description="Byte offset (UTF-8) of this part in the cut field.")
    partBytes: int = Field(description="Bytes of the field in this part.")
    totalBytes: int = Field(description="Bytes of the whole field.")
    omittedBytes: int = Field(description="Bytes of the field not in this part.")
    nextOffset: int | None = Field(
        default=None, description="Pass as `offset` to get_run_events for the next part."
    )
    rest: str = Field(description="How to get what was left out.")


class McpEvent(Event):
    """An event as an MCP result carries it: whole, or cut with a marker."""

    cut: Cut | None = None


@dataclass(frozen=True, slots=True)
class RunRef:
    """Where a run's events are, for the markers that say how to read the rest."""

    run_id: str
    log_path: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """One event in both renditions and the bytes it adds to a result."""

    event: Event
    struct: dict[str, Any]
    line: str
    cost: int
    cut: bool


def _cut_key(data: Any) -> str | None:
    """The top-level string that carries data's bulk; None: cut data as JSON text."""
    if not isinstance(data, dict):
        return None
    strings = [(len(v), k) for k, v in data.items() if isinstance(v, str)]
    if not strings:
        return None
    _, key = max(strings)
    rest = {k: v for k, v in data.items() if k != key}
    return key if json_size(rest) <= SMALL_REST_BYTES else None


def _field_bytes(event: Event, key: str | None) -> bytes:
    value = event.data[key] if key is not None else dumps_compact(event.data)
    return str(value).encode("utf-8", "surrogatepass")


def char_boundary(raw: bytes, index: int) -> int:
    """index moved back to the start of the UTF-8 character it falls in."""
    index = max(0, min(index, len(raw)))
    while 0 < index < len(raw) and raw[index] & 0xC0 == 0x80:
        index -= 1
    return index


def event_line(struct: dict[str, Any]) -> str:
    """One event for the text block: `#id event ts: data`, plain text where data is text."""
    data = struct.get("data")
    if isinstance(data, dict) and set(data) <= {"text", "partial"} and "text" in data:
        body = str(data["text"])
        if data.get("partial"):
            body += " [the line goes on in the next event]"
    elif isinstance(data, str):
        body = data
    else:
        body = dumps_compact(data)
    line = f"#{struct['id']} {struct['event']} {struct['ts']}: {body}"
    cut = struct.get("cut")
    if cut:
        line += f"\n  [cut: {cut['rest']}]"
    return line


def _render(event: Event, struct: dict[str, Any], cut: bool) -> Rendered:
    line = event_line(struct)
    cost = json_size(struct) + 1 + string_size(line + "\n")
    return Rendered(event, struct, line, cost, cut)


def render_whole(event: Event) -> Rendered:
    """The event as it is in the log."""
    return _render(event, event.model_dump(mode="json"), False)


def render_part(event: Event, ref: RunRef, offset: int, size: int) -> Rendered:
    """The part of event's data from byte offset, at most size bytes, with its cut marker."""
    key = _cut_key(event.data)
    raw = _field_bytes(event, key)
    start = char_boundary(raw, offset)
    end = char_boundary(raw, start + max(size, 1))
    if end <= start < len(raw):
        # One character wider than size: still progress, never an empty part.
        end = start + 1
        while end < len(raw) and raw[end] & 0xC0 == 0x80:
            end += 1
    piece = raw[start:end].decode("utf-8", "surrogatepass")
    data: Any = {**event.data, key: piece} if key is not None else piece
    field = f"data.{key}" if key is not None else "data"
    omitted = len(raw) - (end - start)
    next_offset = end if end < len(raw) else None
    how: list[str] = [f"{omitted:,} of {len(raw):,} bytes of {field} of event {event.id} left out"]
    if next_offset is not None:
        how.append(
            f"next part: get_run_events runId={ref.run_id} after={event.id - 1} limit=1 "
            f"offset={next_offset}"
        )
    if start > 0:
        how.append(f"bytes before {start} came in earlier parts (offset=0 and on)")
    if ref.log_path:
        how.append(f'whole in {shlex.quote(ref.log_path)}, the line with "id":{event.id}')
    cut = Cut(
        field=field,
        offset=start,
        partBytes=end - start,
        totalBytes=len(raw),
        omittedBytes=omitted,
        nextOffset=next_offset,
        rest="; ".join(how),
    )
    struct = {**event.model_dump(mode="json"), "data": data, "cut": cut.model_dump()}
    return _render(event, struct, True)


def fit_event(event: Event, ref: RunRef, room: int, offset: int = 0) -> Rendered | None:
    """The event whole if it fits room bytes (from offset 0), else the largest part that does.

    None if not even MIN_PART_BYTES of it fit.
    """
    if offset == 0:
        whole = render_whole(event)
        if whole.cost <= room:
            return whole
    total = len(_field_bytes(event, _cut_key(event.data)))
    low, high = MIN_PART_BYTES, max(MIN_PART_BYTES, total)
    best = render_part(event, ref, offset, low)
    if best.cost > room:
        return None
    while low < high:
        mid = (low + high + 1) // 2
        candidate = render_part(event, ref, offset, mid)
        if candidate.cost <= room:
            best, low = candidate, mid
        else:
            high = mid - 1
    return best


__all__ = [
    "Cut",
    "McpEvent",
    "Rendered",
    "RunRef",
    "char_boundary",
    "dumps_compact",
    "event_line",
    "fit_event",
    "json_size",
    "render_part",
    "render_whole",
    "string_size",
]
