"""The plain-MAE control: the encoder's architecture pre-trained without what A²-MAE adds.

Pre-trained in this process by :func:`a2mae.finetune.ablation` machinery on ``benchmark.mae_snapshot``
for ``benchmark.mae_steps`` steps (record it beside the encoder's own budget), with the model options
``masking=independent`` (each image masked at random on its own, no anchor) and ``geo_encoding=false``
(grid-index sin-cos positions instead of the geographic encoding). A finished run with the same
parameters is reused. Limitation: the snapshot's image sets are kept as sets (images of a set still
attend to each other), so it is not yet "one image per sample".
"""

from __future__ import annotations

from dataclasses import replace

from a2mae.benchmark.arms.encoder import EncoderArm
from a2mae.benchmark.data import BenchmarkError
from a2mae.config import BenchmarkConfig, ModelConfig, PretrainConfig, params_to_flat
from a2mae.pretrain.run import PretrainStage


def mae_params(cfg: BenchmarkConfig, stage: PretrainStage, like: EncoderArm) -> tuple[PretrainStage, str]:
    """The pre-training stage of the plain MAE and its run name.

    The encoder's architecture, independent random masking, no geographic encoding,
    ``benchmark.mae_steps`` steps in this process.

    Args:
        cfg: The ``benchmark`` section.
        stage: The resolved pre-training stage the plain MAE's is derived from.
        like: The encoder whose architecture it takes.
    """
    import hashlib
    import json

    assert like.handle is not None
    arch_cfg = like.handle.model.config
    model = stage.model.model_dump(mode="json")
    model.update(name=arch_cfg.name, masking="independent", geo_encoding=False)
    arch = {
        k: getattr(arch_cfg, k)
        for k in (
            "depth",
            "embed_dim",
            "num_heads",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
        )
    }
    pretrain = stage.pretrain.model_dump(mode="json")
    pretrain.update(num_workers=0, max_steps=cfg.mae_steps, model_overrides=arch)
    key = json.dumps({"model": model, "pretrain": pretrain}, sort_keys=True)
    name = f"benchmark-mae-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    pretrain["run_name"] = name
    m, pt = ModelConfig.model_validate(model), PretrainConfig.model_validate(pretrain)
    flat = {k: v for k, v in stage.flat.items() if not k.startswith(("model.", "pretrain."))}
    flat |= params_to_flat(m, "model.") | params_to_flat(pt, "pretrain.")
    return replace(stage, model=m, pretrain=pt, flat=flat), name


def mae_arm(cfg: BenchmarkConfig, stage: PretrainStage, like: EncoderArm) -> EncoderArm:
    """Pre-train (or reuse) the plain MAE and wrap it as an arm (data statistics).

    Args:
        cfg: The ``benchmark`` section (``mae_snapshot``, ``mae_steps``).
        stage: The resolved pre-training stage (see :func:`mae_params`).
        like: The encoder whose architecture it takes.

    Raises:
        BenchmarkError: No snapshot at ``benchmark.mae_snapshot``.
    """
    from pathlib import Path

    from a2mae.finetune.ablation import _pretrain

    snap = cfg.mae_snapshot
    if "://" not in snap and not (Path(snap) / "snapshot.json").is_file():
        raise BenchmarkError(
            f"benchmark.mae_snapshot: {snap} is not a snapshot (no snapshot.json); run `a2mae tile` or set it"
        )
    mae_stage, name = mae_params(cfg, stage, like)
    handle, _ = _pretrain(mae_stage, snap, name)
    lineage = {
        "snapshot": snap,
        "steps": str(cfg.mae_steps),
        "masking": "independent",
        "geo_encoding": "false",
        **{k: str(v) for k, v in handle.info.items() if not isinstance(v, dict)},
    }
    return EncoderArm("mae", lineage=lineage, handle=handle)
