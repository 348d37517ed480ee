"""@champion alias history: manual promotion with reasons, rollback walking back, moves outside a2mae."""

from __future__ import annotations

import json

import mlflow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.cli import main
from a2mae.registry import aliases, ledger
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


def _history_doc(c) -> list[dict]:
    return json.loads(c.get_registered_model(NAME).tags[aliases.HISTORY_TAG])


def _cli(argv, capsys) -> tuple[int, str, str]:
    rc = main(argv)
    got = capsys.readouterr()
    return rc, got.out, got.err.strip()


def test_history_shows_every_move_and_verify_names_the_first_break(mlflow_tmp, capsys):
    c = mlflow.MlflowClient()
    v1, v2, v3 = versions(3)
    for v in (v1, v2, v3):
        aliases.promote(c, NAME, v, "champion", f"release {v}")
    aliases.rollback(c, NAME, "champion", "bad colours")
    rc, out, _ = _cli(["history", NAME, "--verify"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"{NAME}: @champion = v{v2}"
    assert lines[2].split()[0] == "#2" and f"manual   v{v2} (was v{v1})" in lines[2]
    assert f"rollback v{v2} (was v{v3})" in lines[4] and "bad colours" in lines[4]
    assert all(f"by {ledger.holder()}" in line for line in lines[1:5])
    summary = "history verified: 4 entries, chain of previous versions unbroken"
    assert lines[5] == f"{NAME}: {summary}, @champion = v{v2}, the last entry"
    good = _history_doc(c)

    def broken_by(doc) -> str:
        c.set_registered_model_tag(NAME, aliases.HISTORY_TAG, json.dumps(doc))
        rc, _, err = _cli(["history", NAME, "--verify"], capsys)
        assert rc == 1 and err.startswith(f"a2mae: error: model {NAME}: alias history broken: ")
        assert "\n" not in err
        return err

    assert f"entry 3 (manual v{v3} at" in broken_by([*good[:1], *good[2:]])  # a lost move
    assert f"says the champion was v{v2}, but entry 1" in broken_by([*good[:1], *good[2:]])
    edited = [*good[:3], {**good[3], "reason": "nothing to see"}]
    assert "entry 4 (rollback" in broken_by(edited) and "digest" in broken_by(edited)
    assert "entry 3 (manual" in broken_by([good[0], good[2], good[1], good[3]])  # reordered
    assert "numbered 2 after entry 2" in broken_by([*good[:2], {**good[2], "seq": 2}, good[3]])
    # the last entry lost, the alias put back: the chain is whole, but a committed move is missing
    c.set_registered_model_alias(NAME, "champion", v3)
    assert "entry 4, committed by" in broken_by(good[:3]) and "is missing from the history" in broken_by(
        good[:3]
    )
    c.set_registered_model_alias(NAME, "champion", v1)  # moved in the MLflow UI
    assert f"@champion is v{v1} but the last entry is entry 4 (rollback v{v2}" in broken_by(good)


def test_a_dead_writers_slot_is_taken_over_after_its_lease(mlflow_tmp):
    c = mlflow.MlflowClient()
    v1, v2 = versions(2)
    aliases.promote(c, NAME, v1, "champion", "first")
    dead = ledger.acquire(c, NAME, lambda: aliases.last_seq(aliases.history(c, NAME)), lease_s=1.0)
    assert dead.seq == 2
    e = aliases.promote(c, NAME, v2, "champion", "after the dead one")  # waits for the lease, skips slot 2
    assert (e.seq, e.previous) == (3, v1)
    assert c.get_experiment_by_name(ledger.slot_name(NAME, 2)).tags[ledger.STATE_TAG] == "abandoned"
    with pytest.raises(ledger.RegistryBusyError, match="lost the lock of history entry 2"):
        dead.check()  # the late holder writes nothing
    assert "unbroken" in aliases.verify(c, NAME, "champion")
    assert [x.seq for x in aliases.history(c, NAME)] == [1, 3]


def test_a_held_lock_refuses_in_one_line_after_waiting(mlflow_tmp, monkeypatch, capsys):
    c = mlflow.MlflowClient()
    v1, v2 = versions(2)
    aliases.promote(c, NAME, v1, "champion", "first")
    held = ledger.acquire(c, NAME, lambda: aliases.last_seq(aliases.history(c, NAME)))
    monkeypatch.setattr(ledger, "WAIT_S", 0.5)
    rc, out, err = _cli(["promote", NAME, v2, "--reason", "too late"], capsys)
    assert rc == 1 and out == "" and "\n" not in err
    assert err == (
        f"a2mae: error: model {NAME}: history entry 2 has been locked by another writer for over 0 s "
        f"(experiment {ledger.slot_name(NAME, 2)}); try again later"
    )
    assert (
        len(aliases.history(c, NAME)) == 1
        and "a2mae.promotion_reason" not in c.get_model_version(NAME, v2).tags
    )
    held.finish("released")
    assert aliases.promote(c, NAME, v2, "champion", "now").seq == 3
