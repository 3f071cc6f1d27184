"""Agent specs: what they accept, what they refuse, and what they grant."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from aigrid.spec import AgentSpec

BASE: dict[str, Any] = {"name": "shopper", "instructions": "Buy the cheapest item that fits."}


def test_defaults_make_a_small_interactive_agent() -> None:
    spec = AgentSpec.model_validate(BASE)
    assert (spec.model, spec.priority, spec.max_steps, spec.memory) == ("local", "interactive", 20, True)
    assert spec.tools == () and spec.budget is None


def test_granted_tools_match_names_and_patterns() -> None:
    spec = AgentSpec.model_validate({**BASE, "tools": ["shop.*", "time.now"], "approval": ["shop.pay"]})
    assert spec.grants("shop.search") and spec.grants("shop.pay") and spec.grants("time.now")
    assert not spec.grants("bank.transfer") and not spec.grants("time.nowish")
    assert spec.needs_approval("shop.pay") and not spec.needs_approval("shop.search")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Shopper"}, "name"),
        ({"name": ""}, "name"),
        ({"instructions": ""}, "instructions"),
        ({"tools": ["shop search"]}, "tools"),
        ({"priority": "urgent"}, "priority"),
        ({"max_steps": 0}, "max_steps"),
        ({"budget": {"period": "day"}}, "budget"),
        ({"budget": {"tokens": -5}}, "budget"),
        ({"budget": {"cost": "0.0000001"}}, "budget"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_specs_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        AgentSpec.model_validate({**BASE, **change})
    assert field in str(info.value)
