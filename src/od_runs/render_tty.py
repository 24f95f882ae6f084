"""Events and runs for a person at a terminal, with rich: colours, panels and a live status line."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .models import TERMINAL_STATES, Event, RunStatus, SessionStatus
from .render import RUN_COLUMNS, SESSION_COLUMNS, Block, EventReader, run_row, session_row

# The status line redraws this often; it only reads a few fields, so it is cheap.
REFRESH_PER_SECOND = 8
# How much of a paragraph still being written the live area shows, in lines of the terminal.
LIVE_TEXT_LINES = 3
STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "bold green",
    "failed": "bold red",
    "canceled": "bold yellow",
}
SESSION_STATUS_STYLE = {"active": "cyan", "idle": "green", "retired": "dim"}
BLOCK_STYLE = {
    "start": ("▶ ", "bold green"),
    "status": ("… ", "dim italic"),
    "text": ("", ""),
    "tool": ("$ ", "bold cyan"),
    "tool_done": ("✓ ", "green"),
    "tool_failed": ("✗ ", "bold red"),
    "stdout": ("", ""),
    "stderr": ("", "dim"),
    "error": ("✗ ", "bold red"),
    "info": ("· ", "dim"),
    "warning": ("! ", "yellow"),
    "plan": ("", "cyan"),
    "change": ("± ", "magenta"),
    "other": ("", "dim"),
}


def _elapsed(since: str | None) -> str:
    """Time since an ISO-8601 timestamp as `m:ss` (or `h:mm:ss`)."""
    if not since:
        return "0:00"
    seconds = max(0, int((datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


def render_block(block: Block) -> RenderableType:
    """One block as rich renderables; agent output is text, never markup."""
    if block.kind == "final":
        return Panel(
            Markdown(block.text), title="final answer", title_align="left", border_style="green"
        )
    if block.kind == "output":
        rows = [
            Text("  │ ", "dim") + Text.from_ansi(row, style="dim") for row in block.text.split("\n")
        ]
        return Text("\n").join(rows)
    if block.kind == "end":
        style = STATUS_STYLE.get(block.status or "", "bold")
        return Text(f"■ {block.text}", style=style)
    prefix, style = BLOCK_STYLE.get(block.kind, ("", ""))
    if block.kind in ("stdout", "stderr"):
        return Text.from_ansi(block.text, style=style)
    return Text(prefix + block.text, style=style)


class _RichSink:
    """Collects rendered blocks; streamed assistant text waits in the live area until complete."""

    def __init__(self) -> None:
        self.pending: list[RenderableType] = []
        # Pieces, not one growing string: a long answer is many thousands of deltas.
        self.paragraph: list[str] = []

    def delta(self, text: str) -> None:
        """Grow the paragraph being written."""
        self.paragraph.append(text)

    def end_paragraph(self) -> None:
        """Move the complete paragraph to the output."""
        self.pending.append(Text("".join(self.paragraph).strip("\n")))
        self.paragraph = []

    def paragraph_tail(self, chars: int) -> str:
        """The last chars characters of the paragraph being written."""
        tail: list[str] = []
        size = 0
        for piece in reversed(self.paragraph):
            tail.append(piece)
            size += len(piece)
            if size >= chars:
                break
        return "".join(reversed(tail))[-chars:]

    def block(self, block: Block) -> None:
        """Queue one block for output."""
        self.pending.append(render_block(block))


class TtyPrinter:
    """Renders a run's events with rich, and a live status line while the run is active."""

    def __init__(self, status: RunStatus, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self._sink = _RichSink()
        self._reader = EventReader(self._sink)
        # Any word an `end` event carries, so not only the RunState literals.
        self._status: str = status.status
        self._agent = status.agentId
        self._run_id = status.id
        self._since = status.startedAt or status.createdAt
        self._events = status.lastEventId
        self._live: Live | None = None
        if status.status not in TERMINAL_STATES:
            self._live = Live(
                console=self.console,
                get_renderable=self._live_view,
                refresh_per_second=REFRESH_PER_SECOND,
                transient=True,
            )
            self._live.start()

    def status_line(self) -> Text:
        """`running · demo · run-… · 42 events · 0:07`: what the live line says now."""
        text = Text()
        text.append(self._status, STATUS_STYLE.get(self._status, "bold"))
        text.append(f" · {self._agent} · {self._run_id} · {self._events} events · ", "dim")
        text.append(_elapsed(self._since), "dim")
        return text

    def _live_view(self) -> RenderableType:
        status = Spinner("dots", self.status_line(), style="cyan")
        tail = self._sink.paragraph_tail(LIVE_TEXT_LINES * max(self.console.width, 20))
        return Group(Text(tail), status) if tail else status

    def print(self, event: Event) -> None:
        """Render one event (shown at the next flush)."""
        self._events = event.id
        if event.event == "start":
            self._status = "running"
            self._since = event.ts
        elif event.event == "end" and isinstance(event.data, dict):
            self._status = str(event.data.get("status"))
        self._reader.feed(event)

    def flush(self) -> None:
        """Print everything rendered since the last flush, in one go above the live line."""
        if self._sink.pending:
            pending, self._sink.pending = self._sink.pending, []
            self.console.print(Group(*pending))

    def close(self) -> None:
        """Show what was held back and take the live line down."""
        self._reader.finish()
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.flush()


def runs_table(runs: list[RunStatus]) -> Table:
    """`od-runs ls` on a terminal: a rich table with coloured statuses."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in RUN_COLUMNS:
        table.add_column(column, no_wrap=column in ("ID", "CREATED"), justify=_justify(column))
    for run in runs:
        cells = list(run_row(run))
        table.add_row(
            cells[0],
            Text(cells[1], STATUS_STYLE.get(cells[1], "")),
            *cells[2:6],
            Text(cells[6], "red"),
        )
    return table


def sessions_table(sessions: list[SessionStatus]) -> Table:
    """`od-runs sessions ls` on a terminal: a rich table with coloured statuses."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in SESSION_COLUMNS:
        table.add_column(column, no_wrap=column in ("ID", "LAST RUN", "UPDATED"))
    for session in sessions:
        cells = list(session_row(session))
        table.add_row(cells[0], Text(cells[1], SESSION_STATUS_STYLE.get(cells[1], "")), *cells[2:])
    return table


def _justify(column: str) -> JustifyMethod:
    return "right" if column == "EVENTS" else "left"
