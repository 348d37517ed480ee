"""Norm-pix MSE: masked tokens only, averaged per image, then per set, then over the batch."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.models.loss import masked_patch_loss, normalise_patches


def _case(m: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(m, 4, 16, generator=g, requires_grad=True)
    target = torch.randn(m, 4, 16, generator=g)
    valid = torch.ones(m, 4, 16, dtype=torch.bool)
    is_target = torch.rand(m, generator=g) < 0.6
    is_target[0] = True
    tok_img = torch.randint(0, 3, (m,), generator=g)
    img_set = torch.tensor([0, 0, 1])
    return pred, target, valid, is_target, tok_img, img_set


@settings(max_examples=25, deadline=None)
@given(st.integers(4, 60), st.integers(0, 10_000), st.booleans())
def test_loss_ignores_visible_tokens(m, seed, norm_pix):
    pred, target, valid, is_target, tok_img, img_set = _case(m, seed)
    loss = masked_patch_loss(pred, target, valid, is_target, tok_img, img_set, 2, norm_pix).loss
    loss.backward()
    assert torch.all(pred.grad[~is_target] == 0)  # no gradient through visible tokens
    assert pred.grad[is_target].abs().sum() > 0
    # changing predictions and targets of visible tokens changes nothing
    pred2 = pred.detach().clone()
    target2 = target.clone()
    pred2[~is_target] += 5.0
    target2[~is_target] -= 3.0
    loss2 = masked_patch_loss(pred2, target2, valid, is_target, tok_img, img_set, 2, norm_pix).loss
    assert torch.allclose(loss.detach(), loss2)


def test_average_per_image_then_per_set():
    # set 0: image 0 with 1 masked token of error 1 and image 1 with 9 masked tokens of error 0
    # set 1: image 2 with 2 masked tokens of error 4
    pred = torch.zeros(12, 1, 1)
    target = torch.zeros(12, 1, 1)
    target[0] = 1.0
    target[10:] = 2.0
    tok_img = torch.tensor([0] + [1] * 9 + [2] * 2)
    parts = masked_patch_loss(
        pred,
        target,
        torch.ones(12, 1, 1, dtype=torch.bool),
        torch.ones(12, dtype=torch.bool),
        tok_img,
        torch.tensor([0, 0, 1]),
        2,
        norm_pix=False,
    )
    assert torch.allclose(parts.per_image, torch.tensor([1.0, 0.0, 4.0]))
    assert torch.allclose(parts.loss, torch.tensor((0.5 + 4.0) / 2))


def test_invalid_entries_do_not_count():
    pred = torch.zeros(1, 2, 4)
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [100.0, 100.0, 100.0, 100.0]]])
    valid = torch.tensor([[[True] * 4, [False] * 4]])
    parts = masked_patch_loss(
        pred, target, valid, torch.tensor([True]), torch.tensor([0]), torch.tensor([0]), 1, False
    )
    assert torch.allclose(parts.loss, torch.tensor(7.5))  # mean of 1, 4, 9, 16
    norm = normalise_patches(target, valid)[0, 0]
    assert abs(float(norm.mean())) < 1e-5 and abs(float(norm.std()) - 1) < 1e-3


def test_sets_without_targets_are_left_out():
    pred = torch.ones(2, 1, 1)
    target = torch.zeros(2, 1, 1)
    parts = masked_patch_loss(
        pred,
        target,
        torch.ones(2, 1, 1, dtype=torch.bool),
        torch.tensor([True, False]),
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
        2,
        norm_pix=False,
    )
    assert torch.allclose(parts.loss, torch.tensor(1.0)) and parts.image_has_target.tolist() == [True, False]
