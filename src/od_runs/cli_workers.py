"""`od-runs workers`: the daemons sharing this daemon's database, as its /api/health sees them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from .cli_group import again_after, daemon_client, main, run_async
from .models import Health, WorkerInfo
from .render import aligned, short_time

# The first column is blank in the header and `*` on the daemon that answered, as
# `kubectl config get-contexts` marks the current context: ids stay clean to copy.
WORKER_COLUMNS = ("", "ID", "HOST", "STARTED", "HEARTBEAT", "ACTIVE", "STATE")
NO_DATABASE = (
    "this daemon runs alone (started without --database-url): it has no other workers; "
    "`od-runs serve --database-url postgresql://...` joins daemons into one service"
)


def _parse(iso: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age(iso: str, now: datetime) -> str:
    """How long ago an ISO-8601 moment was, as `2s ago`, `5m ago`, `3h ago` or `2d ago`."""
    moment = _parse(iso)
    if moment is None:
        return iso or "-"
    # Another host's clock may run a little ahead: a heartbeat "in the future" is a fresh one.
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def worker_row(worker: WorkerInfo, this_worker: str | None, now: datetime) -> tuple[str, ...]:
    """The cells of one worker in `od-runs workers`, in WORKER_COLUMNS order."""
    return (
        "*" if worker.id == this_worker else "",
        worker.id,
        worker.host,
        short_time(worker.started),
        age(worker.heartbeat, now),
        str(worker.activeRuns),
        "alive" if worker.alive else "lost",
    )


def workers_table(health: Health, now: datetime | None = None) -> str:
    """The workers of a health body as aligned lines; `*` marks the daemon that answered."""
    when = now or datetime.now(UTC)
    workers = health.workers or []
    rows = [worker_row(w, health.workerId, when) for w in workers]
    return aligned([WORKER_COLUMNS, *rows])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@again_after("url", "token")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """List the daemons sharing this daemon's database: heartbeat, active runs, alive or lost.

    `*` marks the daemon at --url. A daemon whose heartbeat is older than its lease
    (OD_RUNS_LEASE_SECONDS) is `lost`: another daemon concludes its runs as WORKER_LOST.
    A daemon without --database-url has no workers: that is said in one line, exit 0.
    """

    async def go() -> Health:
        async with daemon_client(ctx) as client:
            return await client.health()

    health = run_async(go)
    if as_json:
        body = {
            "workerId": health.workerId,
            "workers": None
            if health.workers is None
            else [w.model_dump(mode="json") for w in health.workers],
        }
        click.echo(json.dumps(body, indent=2))
    elif health.workers is None:
        click.echo(NO_DATABASE)
    else:
        click.echo(workers_table(health))


__all__ = ["age", "worker_row", "workers", "workers_table"]
