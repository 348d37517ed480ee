"""The plain-MAE control: the encoder's architecture pre-trained without what A²-MAE adds.

Pre-trained in this process by :func:`a2mae.finetune.ablation` machinery on ``benchmark.mae_snapshot``
for ``benchmark.mae_steps`` steps (record it beside the encoder's own budget), with the model options
``masking=independent`` (each image masked at random on its own, no anchor) and ``geo_encoding=false``
(grid-index sin-cos positions instead of the geographic encoding). A finished run with the same
parameters is reused. Limitation: the snapshot's image sets are kept as sets (images of a set still
attend to each other), so it is not yet "one image per sample".
"""

from __future__ import annotations

from a2mae.benchmark.arms.encoder import EncoderArm
from a2mae.benchmark.data import BenchmarkError
from a2mae.config import Params, validate_params
from a2mae.pretrain.run import PretrainStage


def mae_params(params: Params, like: EncoderArm) -> tuple[Params, str]:
    """Parameters of the plain-MAE pre-training and its run name.

    The encoder's architecture, independent random masking, no geographic encoding,
    ``benchmark.mae_steps`` steps in this process.
    """
    import hashlib
    import json

    assert like.handle is not None
    cfg = like.handle.model.config
    doc = params.model_dump(mode="json")
    doc["model"].update(name=cfg.name, masking="independent", geo_encoding=False)
    arch = {
        k: getattr(cfg, k)
        for k in (
            "depth",
            "embed_dim",
            "num_heads",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
        )
    }
    doc["pretrain"].update(num_workers=0, max_steps=params.benchmark.mae_steps, model_overrides=arch)
    key = json.dumps({"model": doc["model"], "pretrain": doc["pretrain"]}, sort_keys=True)
    name = f"benchmark-mae-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    doc["pretrain"]["run_name"] = name
    return validate_params(doc, "benchmark plain-MAE arm"), name


def mae_arm(params: Params, like: EncoderArm) -> EncoderArm:
    """Pre-train (or reuse) the plain MAE and wrap it as an arm (data statistics).

    Raises:
        BenchmarkError: No snapshot at ``benchmark.mae_snapshot``.
    """
    from pathlib import Path

    from a2mae.finetune.ablation import _pretrain

    snap = params.benchmark.mae_snapshot
    if "://" not in snap and not (Path(snap) / "snapshot.json").is_file():
        raise BenchmarkError(
            f"benchmark.mae_snapshot: {snap} is not a snapshot (no snapshot.json); run `a2mae tile` or set it"
        )
    p, name = mae_params(params, like)
    handle, _ = _pretrain(PretrainStage.of(p), snap, name)
    lineage = {
        "snapshot": snap,
        "steps": str(params.benchmark.mae_steps),
        "masking": "independent",
        "geo_encoding": "false",
        **{k: str(v) for k, v in handle.info.items() if not isinstance(v, dict)},
    }
    return EncoderArm("mae", lineage=lineage, handle=handle)
