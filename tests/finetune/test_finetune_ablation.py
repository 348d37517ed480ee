"""`a2mae ablate`: pre-training variants (tiny budgets, in process) through the same fine-tuning."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from a2mae.cli import main
from a2mae.finetune.ablation import AblationError, ablate, variant_params

REPO = Path(__file__).resolve().parents[2]
SEG = REPO / "data" / "samples" / "segmentation"
TINY = (  # a tiny encoder for every sensor (the snapshot holds S2, L8, GF1 and GF2 images)
    "pretrain.model_overrides={depth: 2, embed_dim: 32, num_heads: 2, decoder_embed_dim: 32, "
    "decoder_depth: 1, decoder_num_heads: 2}"
)
SETS = [
    TINY,
    "finetune.ablation.pretrain_steps=2",
    "pretrain.batch_size=2",
    "pretrain.system_metrics=false",
    "finetune.compare_protocols=[linear_probe]",
    "finetune.max_steps=1",
]


def test_variant_params_change_only_the_objective(downstream_params):
    p = downstream_params(*SETS)
    a, name_a = variant_params(p, "x", "independent", False)
    b, name_b = variant_params(p, "x", "aligned", True)
    assert (a.model.masking, a.model.geo_encoding, a.pretrain.num_workers, a.pretrain.max_steps) == (
        "independent",
        False,
        0,
        2,
    )
    assert name_a != name_b and name_a == variant_params(p, "x", "independent", False)[1]
    assert a.finetune == b.finetune == p.finetune
    with pytest.raises(AblationError, match="unknown variant 'nope'"):
        ablate(p, snapshot="unused", task="segmentation", data=SEG, only=["nope"])


@pytest.mark.slow
def test_ablation_table_and_reuse(tmp_path, mlflow_tmp, downstream_params, tiny_snapshot, capsys):
    p = downstream_params(*SETS, f"pretrain.storage_path={tmp_path / 'ray'}")
    res = ablate(
        p,
        snapshot=str(tiny_snapshot),
        task="segmentation",
        data=SEG,
        only=["aligned-geo", "independent-nogeo"],
    )
    assert [r["variant"] for r in res.rows] == ["aligned-geo", "independent-nogeo"]
    assert all(0 <= r["linear_probe"] <= 1 and r["pretrain_loss"] > 0 for r in res.rows)
    text = res.report_path.read_text()
    assert "| aligned-geo | aligned | on |" in text and "| independent-nogeo | independent | off |" in text
    c = mlflow.MlflowClient()
    assert "ablation.md" in [a.path for a in c.list_artifacts(res.run_id)]
    pre = c.get_experiment_by_name(p.pretrain.experiment)
    n_runs = len(c.search_runs([pre.experiment_id]))
    assert n_runs == 2
    # Unchanged parameters: the CLI reuses the finished pre-training run instead of training again.
    sets = [x for s in [*SETS, f"pretrain.storage_path={tmp_path / 'ray'}"] for x in ("--set", s)]
    rc = main(
        [
            "ablate",
            "--task",
            "segmentation",
            "--data",
            str(SEG),
            "--snapshot",
            str(tiny_snapshot),
            "--variant",
            "aligned-geo",
            "--set",
            TINY,
            "--set",
            f"finetune.output={tmp_path / 'o2'}",
            *sets,
            "--no-progress",
        ]
    )
    assert rc == 0 and "| aligned-geo |" in capsys.readouterr().out
    assert len(c.search_runs([pre.experiment_id])) == n_runs
