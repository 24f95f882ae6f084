"""What delete and prune take and answer, and the durations and sizes their options are in.

Pure data and parsing (no daemon imports), so the CLI's client can use it as it is.
"""

from __future__ import annotations

import builtins
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import BadRequest
from .models import Bool

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


# ASCII digits and blanks only: the JSON schema's regex engines and Python's agree on those.
DURATION_PATTERN = r"^[ \t]*([0-9]+(?:\.[0-9]+)?)[ \t]*([smhdwSMHDW])[ \t]*$"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 30d, 12h, 90m, 45s or 2w; BadRequest otherwise."""
    match = re.fullmatch(DURATION_PATTERN, text)
    if match is None:
        raise BadRequest(
            f"not a duration: {text[:40]!r} (use a number and a unit: 30d, 12h, 90m, 45s, 2w)",
            code="INVALID_DURATION",
        )
    return float(match[1]) * _UNITS[match[2].lower()]


def parse_size(text: str) -> int:
    """Bytes in a size such as 1G, 500M, 64k or 1048576; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 1G, 500M, 0 to turn the floor off)")
    return int(float(match[1]) * _SIZES[match[2]])


def format_bytes(count: int) -> str:
    """A size for people: 1.5 GB, 320 KB, 12 B."""
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DeleteResult(_Model):
    """Body of DELETE /api/runs/{id}."""

    id: str
    bytes: int = Field(description="Bytes of events removed")


class PruneRequest(_Model):
    """Body of POST /api/runs/prune."""

    olderThan: str = Field(
        max_length=40,
        # What parse_duration reads, so the schema (and a 422) says it before the route does.
        pattern=DURATION_PATTERN,
        description="Age of a run's end: 30d, 12h, 90m, …",
    )
    status: Literal["succeeded", "failed", "canceled"] | None = None
    projectId: str | None = Field(default=None, max_length=128)
    dryRun: Bool = False


class PruneResult(_Model):
    """What a prune removed (or, with dryRun, would remove)."""

    dryRun: bool
    runs: builtins.list[str] = Field(description="Ids of the runs removed")
    count: int
    bytes: int = Field(description="Bytes of events removed")


__all__ = [
    "DeleteResult",
    "PruneRequest",
    "PruneResult",
    "format_bytes",
    "parse_duration",
    "parse_size",
]
