"""Challenger vs champion: the gate, the evidence tags, the frozen split, rollback (stand-in models)."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from a2mae import tasks
from a2mae.cli import main
from a2mae.evaluate.run import decide, evaluate_version
from a2mae.finetune.chips import DatasetError
from a2mae.models.downstream import DownstreamModel, ModelSpec
from a2mae.registry import aliases
from a2mae.registry.downstream import log_model
from a2mae.registry.errors import RegistryError
from a2mae.testing.models import build_model

NAME = "a2mae-classification"
TINY = {
    "depth": 1,
    "embed_dim": 16,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "sensors": ["S2"],
}
# Test split: 3 x a, 2 x b, 1 x c. A model that always answers one class scores its share (OA).
LABELS = {"train": ["a", "b", "c"], "test": ["a", "a", "a", "b", "b", "c"]}


def constant_model(answer: int, classes=("a", "b", "c"), size=16) -> DownstreamModel:
    """Stand-in fine-tuned model whose head always predicts class ``answer``."""
    torch.manual_seed(0)
    enc = build_model("a2mae_vit_tiny_p8_t96", **TINY)
    bands = [b for kb in enc.vocab.key_bands for b in kb]
    spec = ModelSpec(
        "classification",
        list(classes),
        False,
        "S2",
        bands,
        [size, size],
        10.0,
        [1000.0] * 10,
        [300.0] * 10,
        "linear_probe",
        16,
        255,
        "stand-in",
        enc.config.model_dump(mode="json"),
        enc.sensor_entries,
    )
    m = tasks.get(spec.task).build_model(enc, spec)
    with torch.no_grad():
        m.head.fc.weight.zero_()
        m.head.fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(answer), len(classes)).float() * 10)
    return m.eval()


def register(model: DownstreamModel, data) -> str:
    """Log and register a stand-in like `a2mae finetune` does (with the a2mae.data tag)."""
    with mlflow.start_run() as run:
        info = log_model(model, NAME)
    v = str(info.registered_model_version)
    c = mlflow.MlflowClient()
    c.set_model_version_tag(NAME, v, "a2mae.data", str(data))
    c.set_model_version_tag(NAME, v, "a2mae.run_id", run.info.run_id)
    return v


@pytest.fixture
def setup(cls_dataset, mlflow_tmp, downstream_params):
    data = cls_dataset(LABELS)
    return downstream_params("evaluate.promotion_margin=0.05"), data


def test_gate_worse_challenger_rejected_better_promoted_rollback_restores(setup):
    p, data = setup
    c = mlflow.MlflowClient()
    v1 = register(constant_model(1), data)  # always b: OA 2/6
    first = evaluate_version(p, NAME, v1)
    assert first.decision == "first_champion" and first.champion is None
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == v1

    v2 = register(constant_model(2), data)  # always c: OA 1/6 -- worse
    worse = evaluate_version(p, NAME, v2)
    assert worse.decision == "rejected" and worse.champion == v1
    assert worse.challenger_score == pytest.approx(1 / 6) and worse.champion_score == pytest.approx(2 / 6)
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == v1

    v3 = register(constant_model(0), data)  # always a: OA 3/6 -- better by more than the margin
    better = evaluate_version(p, NAME, v3)
    assert better.decision == "promoted" and better.split_hash == worse.split_hash
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == v3

    tags = c.get_model_version(NAME, v3).tags
    assert tags["a2mae.eval.metric"] == "oa" and tags["a2mae.eval.decision"] == "promoted"
    assert float(tags["a2mae.eval.challenger_score"]) == pytest.approx(0.5)
    assert float(tags["a2mae.eval.champion_score"]) == pytest.approx(2 / 6)
    assert tags["a2mae.eval.champion_version"] == v1 and float(tags["a2mae.eval.margin"]) == 0.05
    assert tags["a2mae.eval.split"] == "test" and len(tags["a2mae.eval.split_hash"]) == 64
    assert tags["a2mae.eval.run_id"] == better.run_id
    assert tags["a2mae.eval.challenger_run_id"] == c.get_model_version(NAME, v3).run_id
    assert tags["a2mae.eval.champion_run_id"] == c.get_model_version(NAME, v1).run_id
    assert c.get_model_version(NAME, v2).tags["a2mae.eval.decision"] == "rejected"
    run = c.get_run(better.run_id)
    assert run.data.metrics["challenger_oa"] == pytest.approx(0.5) and run.data.metrics[
        "champion_oa"
    ] == pytest.approx(2 / 6)
    assert run.data.tags["a2mae.split_hash"] == better.split_hash

    back = aliases.rollback(c, NAME, "champion", "bad in production")
    assert back.version == v1 and back.previous == v3
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == v1
    history = json.loads(c.get_registered_model(NAME).tags[aliases.HISTORY_TAG])
    assert [(e["action"], e["version"]) for e in history] == [("auto", v1), ("auto", v3), ("rollback", v1)]
    assert history[-1]["reason"] == "bad in production"
    assert "a2mae.champion_until" in c.get_model_version(NAME, v3).tags
    with pytest.raises(RegistryError, match="first champion; nothing to roll back to"):
        aliases.rollback(c, NAME, "champion")


def test_improvement_below_margin_is_rejected_and_no_promote_reports_only(setup):
    p, data = setup
    v1 = register(constant_model(1), data)
    evaluate_version(p, NAME, v1)
    v2 = register(constant_model(1), data)  # same score: 0 < margin
    assert evaluate_version(p, NAME, v2).decision == "rejected"
    v3 = register(constant_model(0), data)
    e = evaluate_version(p, NAME, v3, promote=False)
    assert e.decision == "promoted_not_applied"
    assert str(mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion").version) == v1


def test_decide():
    assert decide(0.5, None, 0.1) == "first_champion"
    assert decide(0.61, 0.5, 0.1) == "promoted"
    assert decide(0.6, 0.5, 0.1) == "promoted"  # "at least the margin"
    assert decide(0.59, 0.5, 0.1) == "rejected"
    assert decide(float("nan"), 0.5, 0.0) == "rejected"


def test_evaluate_errors(setup, cls_dataset):
    p, data = setup
    v1 = register(constant_model(1), data)
    evaluate_version(p, NAME, v1)
    with pytest.raises(RegistryError, match="already @champion"):
        evaluate_version(p, NAME, v1)
    with pytest.raises(RegistryError, match="version 99: not in the registry"):
        evaluate_version(p, NAME, 99)
    other = cls_dataset({"train": ["x", "y"], "test": ["x", "y"]}, name="other")
    v2 = register(constant_model(1), data)
    with pytest.raises(DatasetError, match="classes"):
        evaluate_version(p, NAME, v2, data=other)  # the frozen split must fit the model


def test_cli_evaluate_promote_rollback_history(setup, capsys):
    _, data = setup
    v1 = register(constant_model(1), data)
    v2 = register(constant_model(2), data)
    sets = ["--set", "evaluate.promotion_margin=0.05"]
    assert main(["evaluate", NAME, v1, *sets]) == 0
    assert "first_champion" in capsys.readouterr().out
    assert main(["evaluate", NAME, v2, *sets]) == 0
    assert "rejected" in (out := capsys.readouterr().out) and f"@champion unchanged (v{v1})" in out
    assert main(["promote", NAME, v2]) == 2
    assert "--reason" in capsys.readouterr().err
    assert main(["promote", NAME, v2, "--reason", "hand-checked on new scenes"]) == 0
    assert f"@champion -> v{v2} (was v{v1})" in capsys.readouterr().out
    assert main(["rollback", NAME]) == 0
    assert f"@champion -> v{v1}" in capsys.readouterr().out
    assert main(["history", NAME]) == 0
    out = capsys.readouterr().out
    assert "manual" in out and "hand-checked on new scenes" in out and "rollback" in out
    assert main(["rollback", "a2mae-nothing"]) == 2
    err = capsys.readouterr().err.strip()
    assert "a2mae-nothing: not in the registry" in err and err.count("\n") == 0


def test_gate_refuses_when_the_champion_moved_while_scoring(setup, monkeypatch, capsys):
    """Another writer promotes while the challenger is scored: nothing moves, one line, exit 2."""
    from a2mae.evaluate import run

    _, data = setup
    c = mlflow.MlflowClient()
    v1 = register(constant_model(1), data)
    aliases.promote(c, NAME, v1, "champion", "first")
    v2, v3 = register(constant_model(2), data), register(constant_model(0), data)
    score_both = run._score_both

    def racing(*args, **kwargs):
        scores = score_both(*args, **kwargs)  # scored against v1 ...
        aliases.promote(c, NAME, v2, "champion", "meanwhile, by hand")  # ... which stops being champion
        return scores

    monkeypatch.setattr(run, "_score_both", racing)
    capsys.readouterr()
    assert main(["evaluate", NAME, v3, "--set", "evaluate.promotion_margin=0.05"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's own log lines
    assert err == (
        f"a2mae: error: model {NAME}: @champion moved from v{v1} to v{v2} while version {v3} was "
        "evaluated; nothing promoted (a2mae.eval.decision=champion_moved); "
        f"run `a2mae evaluate {NAME} {v3}` again"
    )
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == v2
    tags = c.get_model_version(NAME, v3).tags
    assert tags["a2mae.eval.decision"] == "champion_moved" and tags["a2mae.eval.champion_version"] == v1
    assert c.get_run(tags["a2mae.eval.run_id"]).data.tags["a2mae.decision"] == "champion_moved"
    assert [(e.action, e.version) for e in aliases.history(c, NAME)] == [("manual", v1), ("manual", v2)]
    monkeypatch.setattr(run, "_score_both", score_both)
    assert evaluate_version(setup[0], NAME, v3).decision == "promoted"  # against v2 now
    assert aliases.history(c, NAME)[-1].previous == v2
