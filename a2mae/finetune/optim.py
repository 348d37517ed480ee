"""AdamW parameter groups of a fine-tuned model, with layer-wise learning-rate decay."""

from __future__ import annotations

import re
from typing import Any

from a2mae.models.downstream import DownstreamModel


def layer_id(name: str, depth: int) -> int:
    """Layer of a parameter for lr decay: embeddings 0, block ``i`` -> ``i + 1``, the rest ``depth + 1``."""
    if name.startswith(("encoder.patch_embed", "encoder.meta_embed")):
        return 0
    m = re.match(r"encoder\.blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    return depth + 1


def param_groups(
    model: DownstreamModel, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay (``lr * layer_decay ** (depth + 1 - layer)``).

    Biases, norms and embedding tables (the encoder's ``no_weight_decay``) get no weight decay. Frozen
    parameters are left out.
    """
    depth = model.encoder.config.depth
    no_wd = {f"encoder.{n}" for n in model.encoder.no_weight_decay()}
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        decay = not (p.ndim < 2 or name in no_wd)
        g = groups.setdefault(
            (lid, decay),
            {
                "params": [],
                "lr": lr * layer_decay ** (depth + 1 - lid),
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (depth + 1 - lid),
            },
        )
        g["params"].append(p)
    return list(groups.values())
