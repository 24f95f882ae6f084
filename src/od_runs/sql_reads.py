"""The read queries both run stores share (SQLite in store.py, PostgreSQL in pg_store.py).

The stores differ in their driver, their placeholder and how the body column reads back as
text; the queries are the same, so they are written once here over three class attributes
and one method a store provides.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .models import RunStatus, SessionDetail, SessionStatus

if TYPE_CHECKING:
    from .store import RunRow


def where_sql(
    placeholder: str, filters: dict[str, object | None], any_of: tuple[str, Sequence[str] | None]
) -> tuple[str, builtins.list[object]]:
    """`WHERE column = ? AND …` for each filter that is set, plus `column IN (…)` for any_of
    (skipped when None), with the driver's placeholder; the clause and its parameters."""
    clauses: builtins.list[str] = []
    params: builtins.list[object] = []
    for column, value in filters.items():
        if value is not None:
            clauses.append(f"{column} = {placeholder}")
            params.append(value)
    column, values = any_of
    if values is not None:
        clauses.append(f"{column} IN ({', '.join([placeholder] * len(values))})")
        params.extend(values)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


class SqlReads:
    """get, by_request_id, list and the session reads, for a store that says how to fetch."""

    # The driver's placeholder, the body column read as text, the columns of a RunRow.
    PLACEHOLDER = "?"
    BODY = "body"
    ROW_COLUMNS = "body, client_request_id, request_hash, child_start_time"

    async def _fetch(self, query: str, params: Sequence[object] = ()) -> builtins.list[Any]:
        """Every record of a query."""
        raise NotImplementedError

    def _to_row(self, record: Sequence[Any]) -> RunRow:
        """A RunRow from a record of ROW_COLUMNS."""
        raise NotImplementedError

    async def _one(self, query: str, params: Sequence[object]) -> Any:
        records = await self._fetch(query, params)
        return records[0] if records else None

    async def get(self, run_id: str) -> RunRow | None:
        """The stored row of a run, or None."""
        p = self.PLACEHOLDER
        record = await self._one(f"SELECT {self.ROW_COLUMNS} FROM runs WHERE id = {p}", (run_id,))
        return self._to_row(record) if record else None

    async def by_request_id(self, client_request_id: str) -> RunRow | None:
        """The run created with this clientRequestId, or None."""
        query = f"SELECT {self.ROW_COLUMNS} FROM runs WHERE client_request_id = {self.PLACEHOLDER}"
        record = await self._one(query, (client_request_id,))
        return self._to_row(record) if record else None

    async def list(
        self,
        *,
        project_id: str | None = None,
        conversation_id: str | None = None,
        statuses: Sequence[str] | None = None,
        limit: int = 200,
    ) -> builtins.list[RunStatus]:
        """Status bodies, newest first, filtered."""
        p = self.PLACEHOLDER
        where, params = where_sql(
            p, {"project_id": project_id, "conversation_id": conversation_id}, ("status", statuses)
        )
        records = await self._fetch(
            f"SELECT {self.BODY} FROM runs {where} ORDER BY created_at DESC, id DESC LIMIT {p}",
            (*params, limit),
        )
        return [RunStatus.model_validate_json(r[0]) for r in records]

    async def get_session(self, session_id: str) -> SessionDetail | None:
        """A session with its recent events, or None."""
        query = f"SELECT {self.BODY} FROM sessions WHERE id = {self.PLACEHOLDER}"
        record = await self._one(query, (session_id,))
        return SessionDetail.model_validate_json(record[0]) if record else None

    async def session_of(self, conversation_id: str, agent_id: str) -> SessionDetail | None:
        """The session of a conversation (one per conversation and agent), or None."""
        p = self.PLACEHOLDER
        query = f"SELECT {self.BODY} FROM sessions WHERE conversation_id = {p} AND agent_id = {p}"
        record = await self._one(query, (conversation_id, agent_id))
        return SessionDetail.model_validate_json(record[0]) if record else None

    async def list_sessions(
        self,
        *,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> builtins.list[SessionStatus]:
        """Sessions without their events, most recently updated first."""
        p = self.PLACEHOLDER
        where, params = where_sql(
            p, {"conversation_id": conversation_id, "status": status}, ("status", None)
        )
        records = await self._fetch(
            f"SELECT {self.BODY} FROM sessions {where} ORDER BY updated_at DESC, id DESC LIMIT {p}",
            (*params, limit),
        )
        return [
            SessionStatus.model_validate(
                SessionDetail.model_validate_json(r[0]).model_dump(exclude={"recentEvents"})
            )
            for r in records
        ]


__all__ = ["SqlReads", "where_sql"]
