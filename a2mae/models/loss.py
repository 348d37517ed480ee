"""Norm-pix MSE on masked tokens, averaged per image, then per set, then over the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossParts:
    """Loss and its breakdown.

    Attributes:
        loss: Scalar: mean over sets (with a target) of the mean over images of the mean over masked tokens.
        per_image: ``[N]`` per-image loss (0 where the image has no target token).
        image_has_target: ``[N]`` bool.
    """

    loss: torch.Tensor
    per_image: torch.Tensor
    image_has_target: torch.Tensor


def normalise_patches(target: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch standardisation over the valid entries (MAE ``norm_pix_loss``).

    Args:
        target: ``[M, C, P]`` pixels.
        valid: ``[M, C, P]`` bool.
        eps: Added to the variance.

    Returns:
        ``[M, C, P]`` ``(target - mean) / sqrt(var + eps)`` (unbiased variance over valid entries).
    """
    w = valid.to(target.dtype)
    n = w.sum((1, 2), keepdim=True)
    mean = (target * w).sum((1, 2), keepdim=True) / n.clamp(min=1)
    var = (((target - mean) * w) ** 2).sum((1, 2), keepdim=True) / (n - 1).clamp(min=1)
    return (target - mean) / torch.sqrt(var + eps)


def patch_stats(
    target: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` ``[M, 1, 1]`` used by :func:`normalise_patches` (to invert it for display)."""
    w = valid.to(target.dtype)
    n = w.sum((1, 2), keepdim=True)
    mean = (target * w).sum((1, 2), keepdim=True) / n.clamp(min=1)
    var = (((target - mean) * w) ** 2).sum((1, 2), keepdim=True) / (n - 1).clamp(min=1)
    return mean, torch.sqrt(var + eps)


def masked_patch_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    is_target: torch.Tensor,
    tok_img: torch.Tensor,
    img_set: torch.Tensor,
    num_sets: int,
    norm_pix: bool = True,
) -> LossParts:
    """MSE on target (masked) tokens only.

    Args:
        pred: ``[M, C, P]`` predictions.
        target: ``[M, C, P]`` pixels.
        valid: ``[M, C, P]`` bool, entries that count (present bands, valid pixels).
        is_target: ``[M]`` bool, masked tokens (the only ones in the loss).
        tok_img: ``[M]`` image of each token.
        img_set: ``[N]`` set of each image.
        num_sets: ``B``.
        norm_pix: Standardise each target patch first.

    Returns:
        The loss parts.
    """
    if norm_pix:
        target = normalise_patches(target, valid)
    w = valid.to(pred.dtype)
    n = w.sum((1, 2))
    err = (((pred - target) ** 2) * w).sum((1, 2)) / n.clamp(min=1)  # [M]
    use = (is_target & (n > 0)).to(err.dtype)
    num_images = int(img_set.numel())
    zeros = err.new_zeros(num_images)
    img_sum = zeros.index_add(0, tok_img, err * use)
    img_cnt = zeros.index_add(0, tok_img, use)
    has = img_cnt > 0
    per_image = img_sum / img_cnt.clamp(min=1)
    hf = has.to(err.dtype)
    set_sum = err.new_zeros(num_sets).index_add(0, img_set, per_image * hf)
    set_cnt = err.new_zeros(num_sets).index_add(0, img_set, hf)
    set_has = (set_cnt > 0).to(err.dtype)
    loss = (set_sum / set_cnt.clamp(min=1) * set_has).sum() / set_has.sum().clamp(min=1)
    return LossParts(loss, per_image, has)
