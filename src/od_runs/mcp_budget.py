"""MCP results sized for a model: every tool result and resource read fits a byte budget.

The outer agent reading od-runs over MCP pays for every byte of a result in its context, and
its client refuses results past a size. So each result is built to fit
`OD_RUNS_MCP_RESULT_BYTES` (default 40,000), counting what the client receives: the
structured content and its text rendition together, both serialised as JSON-RPC sends them.

Cut, never drop: an event whose data does not fit is cut, and its `cut` marker says how many
bytes were left out and how to get them (the same event again from an `offset`, or its line in
the log). What goes first is the final answer, the status and the error, then the newest
events; older events give way and are counted. The log, REST and SSE are never budgeted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mcp.types import CallToolResult, TextContent

from .config import env
from .mcp_cut import (
    MIN_PART_BYTES,
    Cut,
    McpEvent,
    Rendered,
    RunRef,
    char_boundary,
    dumps_compact,
    fit_event,
    json_size,
    render_whole,
    string_size,
)
from .models import TERMINAL_STATES, Event, RunStatus

DEFAULT_RESULT_BYTES = 40_000
# Below this not even a status and one cut event fit.
MIN_RESULT_BYTES = 4_096
# What the JSON-RPC envelope adds around a result: jsonrpc, id, _meta.
ENVELOPE_BYTES = 256
# The final answer's excerpt in a lead sentence.
EXCERPT_CHARS = 400
# Kept free for the newest events when the final answer has to be cut.
NEWEST_RESERVE_BYTES = 2_048
# Room worth cutting the next-newest event into rather than leaving it out.
WORTH_CUTTING_BYTES = 1_024


def result_budget() -> int:
    """OD_RUNS_MCP_RESULT_BYTES: the byte budget of one MCP result (at least 4,096)."""
    raw = env("MCP_RESULT_BYTES")
    try:
        value = int(raw) if raw else DEFAULT_RESULT_BYTES
    except ValueError:
        value = DEFAULT_RESULT_BYTES
    return max(MIN_RESULT_BYTES, value)


def tool_result_size(text: str, structured: dict[str, Any]) -> int:
    """Bytes of a tool result with one text block and structured content, envelope included."""
    body = {
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": False,
    }
    return json_size(body) + ENVELOPE_BYTES


def tool_result(text: str, structured: dict[str, Any]) -> CallToolResult:
    """The CallToolResult a budgeted tool returns: the compact text, then the structure."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured
    )


def _is_final_answer(event: Event) -> bool:
    data = event.data
    return (
        event.event == "agent"
        and isinstance(data, dict)
        and data.get("type") == "message"
        and data.get("final") is True
        and isinstance(data.get("text"), str)
    )


def final_answer(events: Sequence[Event]) -> Event | None:
    """The run's final answer among events (an agent message marked final), if any."""
    for event in reversed(events):
        if _is_final_answer(event):
            return event
    return None


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> tuple[str, bool]:
    flat = " ".join(text.split())
    return (flat, False) if len(flat) <= limit else (flat[: limit - 1].rstrip() + "…", True)


def lead_sentence(
    status: RunStatus, answer: Event | None, cursor: int | None = None, latest: str | None = None
) -> str:
    """One sentence a model can act on: running or done, the answer or the error, what next."""
    run_id = status.id
    if status.status not in TERMINAL_STATES:
        after = cursor if cursor is not None else status.lastEventId
        text = (
            f"Run {run_id} is {status.status} ({status.lastEventId} events so far): call "
            f"wait_run with runId={run_id} after={after} to keep following it; a quiet run "
            "is still working."
        )
        return text + (f" Latest: {latest}" if latest else "")
    if status.status == "succeeded":
        text = f"Run {run_id} succeeded."
    elif status.status == "canceled":
        text = f"Run {run_id} was canceled."
    else:
        text = f"Run {run_id} failed"
        if status.errorCode:
            error, _ = _excerpt(status.error or "", EXCERPT_CHARS)
            text += f" with {status.errorCode}: {error}"
            if status.retryable is not None:
                retry = "retrying later may work" if status.retryable else "do not retry as is"
                text += f" ({retry})"
        text += "."
    if answer is not None:
        excerpt, cut = _excerpt(str(answer.data["text"]))
        text += f" Final answer: {excerpt}"
        if cut:
            text += (
                f" (the whole answer is event {answer.id}: get_run_events runId={run_id} "
                f"after={answer.id - 1} limit=1)"
            )
    else:
        text += f" get_run_events runId={run_id} pages through everything it emitted."
    return text


def status_line(status: RunStatus) -> str:
    """The status body for the text block: compact JSON without empty fields."""
    body = status.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    body.update(id=status.id, status=status.status, lastEventId=status.lastEventId)
    return "run: " + dumps_compact(body)


# Results ----------------------------------------------------------------------------------


def _shrink_to_fit(
    build: Callable[[list[Rendered]], tuple[str, dict[str, Any]]],
    chosen: list[Rendered],
    budget: int,
    drop_first: bool,
) -> tuple[str, dict[str, Any]]:
    """Build the result; while it is over budget, give up one more event (estimates slip)."""
    while True:
        text, structured = build(chosen)
        if tool_result_size(text, structured) <= budget or not chosen:
            return text, structured
        chosen = chosen[1:] if drop_first else chosen[:-1]


def events_page(
    ref: RunRef,
    events: list[Event],
    after: int,
    more_beyond: bool,
    budget: int,
    offset: int = 0,
) -> CallToolResult:
    """get_run_events: as many whole events after the cursor as fit, or one cut first one.

    With an offset, the part of event after+1 from that byte of its data.
    """

    def build(chosen: list[Rendered]) -> tuple[str, dict[str, Any]]:
        cursor = chosen[-1].event.id if chosen else after
        has_more = more_beyond or len(chosen) < len(events)
        structured = {
            "items": [r.struct for r in chosen],
            "nextCursor": cursor,
            "hasMore": has_more,
        }
        if chosen:
            head = f"Events {chosen[0].event.id} to {cursor} of run {ref.run_id}"
        else:
            head = f"No events of run {ref.run_id} after {after}"
        head += f" (log: {ref.log_path})." if ref.log_path else "."
        lines = [head, *(r.line for r in chosen)]
        if has_more:
            lines.append(f"More: get_run_events runId={ref.run_id} after={cursor}")
        return "\n".join(lines), structured

    base_text, base = build([])
    # The header and footer grow with the ids: a little room for that.
    room = budget - tool_result_size(base_text, base) - 200
    chosen: list[Rendered] = []
    for index, event in enumerate(events):
        if index == 0:
            first = fit_event(event, ref, room, offset)
            if first is None:
                break
            chosen.append(first)
            room -= first.cost
            if first.cut:
                break
            continue
        whole = render_whole(event)
        if whole.cost > room:
            break
        chosen.append(whole)
        room -= whole.cost
    text, structured = _shrink_to_fit(build, chosen, budget, drop_first=False)
    return tool_result(text, structured)


def wait_result(
    ref: RunRef,
    status: RunStatus,
    window: list[Event],
    after: int,
    budget: int,
    latest: str | None = None,
) -> CallToolResult:
    """wait_run: the lead sentence, the status, the final answer, then the newest events that
    fit; the other events after the cursor are counted in `skipped`."""
    done = status.status in TERMINAL_STATES
    answer = final_answer(window) if done else None
    next_cursor = window[-1].id if window else after
    new = next_cursor - after

    def build(chosen: list[Rendered]) -> tuple[str, dict[str, Any]]:
        ordered = sorted(chosen, key=lambda r: r.event.id)
        summary = lead_sentence(status, answer, next_cursor, latest)
        skipped = new - len(ordered)
        structured = {
            "summary": summary,
            "run": status.model_dump(mode="json"),
            "done": done,
            "events": [r.struct for r in ordered],
            "skipped": skipped,
            "nextCursor": next_cursor,
        }
        lines = [summary, status_line(status)]
        if skipped:
            lines.append(
                f"{skipped} of the {new} events after the cursor are left out: "
                f"get_run_events runId={ref.run_id} after={after} pages through them."
            )
        lines += [r.line for r in ordered]
        lines.append(f"nextCursor: {next_cursor}; done: {str(done).lower()}")
        return "\n".join(lines), structured

    base_text, base = build([])
    room = budget - tool_result_size(base_text, base) - 200
    chosen: list[Rendered] = []
    if answer is not None:
        fitted = fit_event(answer, ref, max(MIN_PART_BYTES, room - NEWEST_RESERVE_BYTES))
        if fitted is not None:
            chosen.append(fitted)
            room -= fitted.cost
    for index, event in enumerate(reversed(window)):
        if answer is not None and event.id == answer.id:
            continue
        rendered = render_whole(event)
        if rendered.cost > room:
            # The newest event is always there, cut if need be; an older one only if the
            # room left is worth it. Either way, the ones older still give way.
            if index == 0 or room >= WORTH_CUTTING_BYTES:
                cut = fit_event(event, ref, room)
                if cut is not None:
                    chosen.append(cut)
            break
        chosen.append(rendered)
        room -= rendered.cost
    # The oldest events give way first; the final answer (first in chosen) goes last.
    order = [chosen[0], *sorted(chosen[1:], key=lambda r: -r.event.id)] if answer else chosen
    text, structured = _shrink_to_fit(build, order, budget, drop_first=False)
    return tool_result(text, structured)


def run_view(status: RunStatus, hint: str, summary: str, budget: int) -> CallToolResult:
    """get_run, start_run, cancel_run: the lead sentence, the status, how to follow it."""
    structured = {"summary": summary, "run": status.model_dump(mode="json"), "hint": hint}
    text = "\n".join([summary, status_line(status), hint])
    if tool_result_size(text, structured) > budget and status.error:
        # Only an absurd error message can make a status big; its head says what happened.
        status = status.model_copy(update={"error": _excerpt(status.error, EXCERPT_CHARS)[0]})
        structured["run"] = status.model_dump(mode="json")
        text = "\n".join([summary, status_line(status), hint])
    return tool_result(text, structured)


def fit_list(
    items: list[dict[str, Any]],
    wrap: Callable[[list[dict[str, Any]], int], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    budget: int,
) -> CallToolResult:
    """A list result: as many leading items as fit; wrap(kept, left_out) is the structure."""
    kept = list(items)
    while True:
        structured = wrap(kept, len(items) - len(kept))
        text = describe(structured)
        if tool_result_size(text, structured) <= budget or not kept:
            return tool_result(text, structured)
        # Cheap first step, exact after: cut by the share that is over.
        over = tool_result_size(text, structured) / budget
        kept = kept[: min(len(kept) - 1, int(len(kept) / over))]


def compact_json(value: Any) -> str:
    """value as compact JSON without null fields, for a text block."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return dumps_compact(strip(value))


def resource_jsonl(ref: RunRef, uri: str, events: list[Event], budget: int, mime_type: str) -> str:
    """runs://{id}/events: the newest events as JSONL within the budget, the final answer
    kept (cut if need be), newest cut rather than dropped; oldest lines give way."""
    envelope = (
        json_size({"contents": [{"uri": uri, "mimeType": mime_type, "text": ""}]}) + ENVELOPE_BYTES
    )
    room = budget - envelope

    def line_cost(rendered: Rendered) -> int:
        return string_size(dumps_compact(rendered.struct) + "\n")

    def fit(event: Event, space: int) -> Rendered | None:
        # fit_event counts both renditions; a resource has only the JSONL one, so twice the room.
        found = fit_event(event, ref, 2 * space)
        while found is not None and line_cost(found) > space:
            found = fit_event(event, ref, found.cost - max(64, (line_cost(found) - space) * 2))
        return found

    chosen: list[Rendered] = []
    answer = final_answer(events)
    if answer is not None:
        got = fit(answer, max(MIN_PART_BYTES * 2, room - NEWEST_RESERVE_BYTES))
        if got is not None:
            chosen.append(got)
            room -= line_cost(got)
    for index, event in enumerate(reversed(events)):
        if answer is not None and event.id == answer.id:
            continue
        rendered = render_whole(event)
        if line_cost(rendered) > room:
            if index == 0 or room >= WORTH_CUTTING_BYTES:
                cut = fit(event, room)
                if cut is not None:
                    chosen.append(cut)
            break
        chosen.append(rendered)
        room -= line_cost(rendered)
    chosen.sort(key=lambda r: r.event.id)
    return "".join(dumps_compact(r.struct) + "\n" for r in chosen)


def clip_message(message: str, budget: int) -> str:
    """A progress message cut to what a notification may carry within the budget."""
    room = budget - ENVELOPE_BYTES - 128
    if string_size(message) <= room:
        return message
    raw = message.encode("utf-8", "surrogatepass")
    end = char_boundary(raw, room // 2)
    return raw[:end].decode("utf-8", "surrogatepass") + "…"


__all__ = [
    "DEFAULT_RESULT_BYTES",
    "Cut",
    "McpEvent",
    "RunRef",
    "clip_message",
    "compact_json",
    "events_page",
    "final_answer",
    "fit_list",
    "json_size",
    "lead_sentence",
    "resource_jsonl",
    "result_budget",
    "run_view",
    "tool_result",
    "tool_result_size",
    "wait_result",
]
