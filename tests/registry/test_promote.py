"""@champion alias history: manual promotion with reasons, rollback walking back, moves outside a2mae."""

from __future__ import annotations

import mlflow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.registry import aliases
from a2mae.registry.errors import RegistryError

NAME = "a2mae-segmentation"


def versions(n: int) -> list[str]:
    """Register ``n`` bare versions (stand-ins: no model files needed for alias logic)."""
    c = mlflow.MlflowClient()
    c.create_registered_model(NAME)
    return [str(c.create_model_version(NAME, source=f"/nowhere/{i}").version) for i in range(n)]


def test_manual_promote_records_reason_and_stamps(mlflow_tmp):
    c = mlflow.MlflowClient()
    v1, v2 = versions(2)
    with pytest.raises(RegistryError, match="--reason"):
        aliases.promote(c, NAME, v1, "champion", "  ")
    e1 = aliases.promote(c, NAME, v1, "champion", "first release")
    e2 = aliases.promote(c, NAME, v2, "champion", "better on new scenes")
    assert (e1.previous, e2.previous) == (None, v1)
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == v2
    t1, t2 = c.get_model_version(NAME, v1).tags, c.get_model_version(NAME, v2).tags
    assert t2["a2mae.promotion_reason"] == "better on new scenes"
    assert t1["a2mae.champion_until"] == t2["a2mae.champion_from"]
    assert [e.reason for e in aliases.history(c, NAME)] == ["first release", "better on new scenes"]
    with pytest.raises(RegistryError, match="version 9: not in the registry"):
        aliases.promote(c, NAME, 9, "champion", "x")


def test_rollback_walks_back_and_refuses_foreign_moves(mlflow_tmp):
    c = mlflow.MlflowClient()
    v1, v2, v3 = versions(3)
    with pytest.raises(RegistryError, match="no @champion to roll back"):
        aliases.rollback(c, NAME, "champion")
    for v in (v1, v2, v3):
        aliases.promote(c, NAME, v, "champion", f"release {v}")
    assert aliases.rollback(c, NAME, "champion").version == v2
    assert aliases.rollback(c, NAME, "champion").version == v1
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        aliases.rollback(c, NAME, "champion")
    c.set_registered_model_alias(NAME, "champion", v3)  # someone moved it by hand in the MLflow UI
    with pytest.raises(RegistryError, match="moved outside a2mae"):
        aliases.rollback(c, NAME, "champion")
    assert len(aliases.history(c, NAME)) == 5  # the history is kept whole


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 5).map(str), st.just("R")), max_size=14))
def test_champion_stack_replays_like_a_stack(ops):
    """Replaying promote (push) / rollback (pop to the one below) gives what a plain stack gives."""
    events, model = [], []
    for op in ops:
        if op == "R":
            if len(model) < 2:
                continue  # a rollback with no earlier champion is refused before any event is written
            model.pop()
            events.append(aliases.AliasEvent("rollback", model[-1], None, "t", ""))
        else:
            model.append(op)
            events.append(aliases.AliasEvent("manual", op, None, "t", ""))
    assert aliases.champion_stack(events) == model
