"""The adapter registry: every agent is one module, chosen by agentId."""

from __future__ import annotations

from typing import Any

import pytest

from od_runs.agents import ADAPTERS, agent_ids, make_adapter
from od_runs.errors import BadRequest, Invalid
from od_runs.models import RunCreate, SessionRef


def test_every_registered_agent_is_found_by_its_id() -> None:
    assert agent_ids() == sorted(ADAPTERS) and {"codex", "command", "demo"} <= set(ADAPTERS)
    for agent_id, adapter in ADAPTERS.items():
        assert adapter.agent_id == agent_id


def test_an_unknown_agent_id_is_a_422_naming_the_known_ones() -> None:
    with pytest.raises(Invalid) as caught:
        make_adapter(RunCreate(agentId="nope"))
    assert caught.value.status == 422 and caught.value.code == "INVALID_REQUEST"
    assert "agentId" in caught.value.message and "codex" in caught.value.message


@pytest.mark.parametrize(
    "fields",
    [{"model": "gpt-5.5"}, {"sessionRef": SessionRef(threadId="0199a213-81c0-7800-8aa1")}],
)
def test_options_an_agent_has_no_use_for_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="'demo'"):
        make_adapter(RunCreate(agentId="demo", **fields))
