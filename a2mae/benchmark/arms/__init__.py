"""The arms of a benchmark: encoders under test and the baselines they are compared with.

One module per arm: :mod:`.encoder` (encoders under test and ``scratch``), :mod:`.rcf` (torchgeo RCF)
and :mod:`.mae` (the plain-MAE control).
"""

from __future__ import annotations

from a2mae.benchmark.arms.base import Arm
from a2mae.benchmark.stage import BenchmarkStage


def build_arms(stage: BenchmarkStage, encoders: list[str]) -> list[Arm]:
    """The arms in report order: encoders, then ``benchmark.baselines`` (``rcf`` gives one arm per mode).

    Raises:
        BenchmarkError: An encoder that does not load.
    """
    from a2mae.benchmark.arms.encoder import encoder_arm, scratch_arm
    from a2mae.benchmark.arms.rcf import RCFArm

    cfg = stage.cfg
    arms: list[Arm] = []
    for i, uri in enumerate(encoders):
        arms.append(
            encoder_arm(
                "encoder" if i == 0 else f"encoder-{i + 1}",
                uri,
                stage.finetune,
                use_encoder_stats=cfg.normalization == "encoder",
            )
        )
    first = arms[0]
    for base in cfg.baselines:
        if base == "scratch":
            arms.append(scratch_arm(first, stage.finetune.cfg.seed))  # type: ignore[arg-type]
        elif base == "rcf":
            for mode in cfg.rcf_modes:
                arms.append(
                    RCFArm(f"rcf-{mode}", patch=first.patch, mode=mode, features=cfg.rcf_features, seed=0)
                )
        elif base == "mae":
            from a2mae.benchmark.arms.mae import mae_arm

            arms.append(mae_arm(cfg, stage.pretrain, first))  # type: ignore[arg-type]
    return arms


def is_encoder(arm: Arm) -> bool:
    """An arm under test (its differences to each baseline are reported)."""
    return arm.name == "encoder" or arm.name.startswith("encoder-")
