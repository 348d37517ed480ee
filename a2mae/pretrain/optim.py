"""AdamW with decay / no-decay parameter groups (MAE recipe).

No weight decay for 1-D parameters (biases, norm scales), for embeddings and position tables named by
``model.no_weight_decay()`` and for tokens (``*_token``); decay for every other weight matrix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

BETAS = (0.9, 0.95)


def scaled_lr(blr: float, effective_batch: int) -> float:
    """Absolute learning rate from the base rate: ``lr = blr * effective_batch / 256`` (MAE linear rule).

    Args:
        blr: Base learning rate (per 256 samples).
        effective_batch: Image sets per optimiser step over all workers and accumulation steps.
    """
    return blr * effective_batch / 256


def _no_decay_names(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    names = fn() if callable(fn) else ()
    return set(names or ())


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` is a listed name, sits under a listed module prefix, or ends with a listed leaf."""
    return any(name == p or name.startswith(p + ".") or name.endswith("." + p) for p in patterns)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Args:
        model: The model; its optional ``no_weight_decay()`` returns parameter names (or module
            prefixes) exempt from decay, e.g. position tables and embeddings.
        weight_decay: Decay of the decayed group.

    Returns:
        Two groups ``[{"params", "weight_decay", "name": "decay"}, {..., "name": "no_decay"}]`` (a group
        is left out when empty).
    """
    exempt = _no_decay_names(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name.endswith("_token") or _matches(name, exempt):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with betas (0.9, 0.95).

    Args:
        model: The model.
        lr: Peak learning rate (the schedule rescales it every step).
        weight_decay: Decay of the decayed group.
    """
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS)
