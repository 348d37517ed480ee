"""Anchor-aware masking in ground coordinates (docs/model.md), vectorised over the whole batch.

1. An anchor image is chosen per set (``random``, ``finest_gsd`` or ``coarsest_gsd``).
2. Its token grid defines ground cells; a subset of ratio ``r`` is masked, shared by its groups
   (``consistent``) or drawn per group (``independent``; the ground mask is then their union).
3. Every other image's token footprint is supersampled (``s x s`` points), projected into the anchor's
   grid through the ground geometry (``(u, v) -> (x, y) -> (u_a, v_a)``) and gets ``rho``, the fraction
   of its in-footprint points on masked anchor ground. A token is *in* the anchor footprint when at least
   half of its points are.
4. Policy ``aligned``: in-footprint tokens with ``rho >= 0.5`` are masked (protected: never unmasked),
   other in-footprint tokens are masked with probability ``r_extra``, tokens outside with ``r_out``.
   ``complementary`` swaps the roles of masked and visible anchor ground. ``independent`` is SatMAE's
   plain per-(image, group) random masking at ratio ``r``.
5. Budget: each set gets ``max(round(f * L_set), anchor visible)`` visible tokens. Excess visible
   non-anchor tokens are masked at random; a deficit is filled from unprotected masked non-anchor tokens
   (so the aligned guarantee and the anchor's ratio always hold; only when no such token is left does a
   set stay below its budget).

Randomness comes from one optional ``torch.Generator`` (same generator state -> identical masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from a2mae.models import geo
from a2mae.models.config import A2MAEConfig
from a2mae.models.layout import TokenLayout


@dataclass
class MaskResult:
    """Mask decisions for a batch.

    Attributes:
        masked: ``[T]`` bool, True = hidden from the encoder (a reconstruction target).
        anchor: ``[B]`` image index of each set's anchor.
        budget: ``[B]`` visible-token budget of each set.
        protected: ``[T]`` bool, tokens the policy forces to stay masked.
        rho: ``[Ncell]`` masked fraction of the in-footprint part of non-anchor cells (0 elsewhere).
        in_footprint: ``[Ncell]`` bool, non-anchor cell at least half inside the anchor footprint.
    """

    masked: torch.Tensor
    anchor: torch.Tensor
    budget: torch.Tensor
    protected: torch.Tensor
    rho: torch.Tensor
    in_footprint: torch.Tensor


def rand_uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``[n]`` uniform noise from ``generator`` (on its device), moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gdev).to(device)


def segment_rank(seg: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Rank of each element within its segment when sorted by ``noise`` (ascending).

    Args:
        seg: ``[M]`` non-negative segment ids.
        noise: ``[M]`` values in [0, 1).

    Returns:
        ``[M]`` long ranks (0 for the smallest noise of each segment).
    """
    if seg.numel() == 0:
        return seg.clone()
    order = torch.argsort(seg.to(torch.float64) * 2.0 + noise.to(torch.float64))
    pos = torch.empty_like(order)
    pos[order] = torch.arange(len(order), device=seg.device)
    counts = torch.bincount(seg)
    start = torch.cumsum(counts, 0) - counts
    return pos - start[seg]


def select_anchor(layout: TokenLayout, policy: str, generator: torch.Generator | None) -> torch.Tensor:
    """Anchor image index of each set ``[B]`` (-1 for a set without images)."""
    dev = layout.img_set.device
    b = layout.num_sets
    n = layout.num_images
    counts = torch.bincount(layout.img_set, minlength=b)
    first = torch.cumsum(counts, 0) - counts
    if policy == "random":
        u = rand_uniform(b, generator, dev)
        pick = first + torch.minimum((u * counts).long(), (counts - 1).clamp(min=0))
        return torch.where(counts > 0, pick, torch.full_like(pick, -1))
    gsd = layout.img_gsd.to(torch.float64)
    key = gsd if policy == "finest_gsd" else -gsd
    best = torch.full((b,), float("inf"), dtype=torch.float64, device=dev)
    best = best.scatter_reduce(0, layout.img_set, key, reduce="amin")
    idx = torch.arange(n, device=dev)
    cand = torch.where(key <= best[layout.img_set], idx, torch.full_like(idx, n))
    pick = torch.full((b,), n, dtype=torch.long, device=dev).scatter_reduce(0, layout.img_set, cand, "amin")
    return torch.where(pick < n, pick, torch.full_like(pick, -1))


def project_to_anchor(
    layout: TokenLayout, anchor: torch.Tensor, ground_mask: torch.Tensor, supersample: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-ground fraction ``rho`` and footprint membership of every cell, in the anchor's grid.

    Args:
        layout: Batch layout.
        anchor: ``[B]`` anchor image per set.
        ground_mask: ``[Ncell]`` bool, masked anchor ground (only anchor cells are read).
        supersample: Points per token side.

    Returns:
        ``(rho [Ncell] float32, inside_fraction [Ncell] float32)``.
    """
    dev = layout.img_set.device
    s = supersample
    cell_img = layout.cell_img
    hw = layout.img_hw[cell_img].to(torch.float64)  # [Nc, 2] rows, cols
    off = (torch.arange(s, dtype=torch.float64, device=dev) + 0.5) / s
    rc = layout.cell_rc.to(torch.float64)
    v = (rc[:, 0:1] + off[None]) / hw[:, 0:1]  # [Nc, s]
    u = (rc[:, 1:2] + off[None]) / hw[:, 1:2]
    uv = torch.stack([u[:, None, :].expand(-1, s, s), v[:, :, None].expand(-1, s, s)], -1).reshape(
        -1, s * s, 2
    )
    xy = geo.apply_affine(layout.img_affine[cell_img], uv)
    a_img = anchor[layout.img_set[cell_img]]  # [Nc]
    uva = geo.apply_affine(geo.invert_affine(layout.img_affine)[a_img], xy)
    inside = (uva >= 0).all(-1) & (uva < 1).all(-1)  # [Nc, s*s]
    ahw = layout.img_hw[a_img]
    col = (uva[..., 0] * ahw[:, None, 1]).floor().long().clamp(min=0)
    row = (uva[..., 1] * ahw[:, None, 0]).floor().long().clamp(min=0)
    col = torch.minimum(col, ahw[:, None, 1] - 1)
    row = torch.minimum(row, ahw[:, None, 0] - 1)
    cell = layout.img_cell_start[a_img][:, None] + row * ahw[:, None, 1] + col
    on_masked = ground_mask[cell] & inside
    n_in = inside.sum(1)
    rho = on_masked.sum(1).to(torch.float32) / n_in.clamp(min=1).to(torch.float32)
    return rho, n_in.to(torch.float32) / (s * s)


def anchor_coverage(layout: TokenLayout, anchor: torch.Tensor, is_anchor_img: torch.Tensor) -> torch.Tensor:
    """``[Ncell]`` long: for anchor cells, how many other images of the set contain the cell centre."""
    dev = layout.img_set.device
    count = torch.zeros(int(layout.cell_rc.shape[0]), dtype=torch.long, device=dev)
    others = (~is_anchor_img).nonzero().squeeze(1)
    if others.numel() == 0:
        return count
    a = anchor[layout.img_set[others]]
    a_cells = layout.img_hw[a, 0] * layout.img_hw[a, 1]
    pair_img = torch.repeat_interleave(others, a_cells)
    pair_anchor = torch.repeat_interleave(a, a_cells)
    first = torch.cumsum(a_cells, 0) - a_cells
    within = torch.arange(int(a_cells.sum()), device=dev) - torch.repeat_interleave(first, a_cells)
    cell = layout.img_cell_start[pair_anchor] + within
    hw = layout.img_hw[pair_anchor].to(torch.float64)
    rc = layout.cell_rc[cell].to(torch.float64)
    uv = torch.stack([(rc[:, 1] + 0.5) / hw[:, 1], (rc[:, 0] + 0.5) / hw[:, 0]], -1)[:, None]
    xy = geo.apply_affine(layout.img_affine[pair_anchor], uv)
    uvk = geo.apply_affine(geo.invert_affine(layout.img_affine)[pair_img], xy)[:, 0]
    inside = (uvk >= 0).all(-1) & (uvk < 1).all(-1)
    return count.index_add_(0, cell, inside.long())


def stratified_mask(
    unit: torch.Tensor, stratum: torch.Tensor, noise: torch.Tensor, n_total: torch.Tensor, r: float
) -> torch.Tensor:
    """Mask ``n_total[u]`` random elements of each unit ``u``, spread over its strata at ratio ``r``.

    Each stratum gets ``floor(r * n)`` masked elements; the remaining ones (to reach the unit's total)
    go to the strata with the largest remainders, so every stratum is within one element of ratio r.

    Args:
        unit: ``[M]`` unit (slab or image) of each element, ``0..U-1``.
        stratum: ``[M]`` stratum of each element, ``0..K-1``.
        noise: ``[M]`` uniform noise (ranks within a stratum).
        n_total: ``[U]`` elements to mask per unit.
        r: Ratio.

    Returns:
        ``[M]`` bool mask.
    """
    k = int(stratum.max()) + 1 if stratum.numel() else 1
    n_units = int(n_total.numel())
    seg = unit * k + stratum
    rank = segment_rank(seg, noise)
    n_s = (
        torch.zeros(n_units * k, dtype=torch.long, device=unit.device)
        .index_add_(0, seg, torch.ones_like(seg))
        .reshape(n_units, k)
    )
    share = r * n_s.to(torch.float64)
    m_s = share.floor().long()
    rem = share - m_s
    extra = (n_total - m_s.sum(1)).clamp(min=0)
    order = torch.argsort(-rem, dim=1, stable=True)
    pos = torch.empty_like(order).scatter_(1, order, torch.arange(k, device=unit.device).expand(n_units, k))
    m_s = torch.minimum(m_s + (pos < extra[:, None]).long(), n_s).reshape(-1)
    return rank < m_s[seg]


def anchor_aware_mask(
    layout: TokenLayout, cfg: A2MAEConfig, generator: torch.Generator | None = None
) -> MaskResult:
    """Mask decisions for a batch (see the module docstring).

    Steps: pick the anchors, mask the anchor at ratio ``r``, mask the other tokens by the policy, then
    apply the visible-token budget. Random draws, in this order (the order is part of the result):
    ``[B]`` anchor noise (``random`` anchors only), ``[T]`` token noise, ``[Ncell]`` cell noise (only
    when the anchor's groups share one mask), ``[T]`` policy noise, ``[T]`` budget noise.

    Args:
        layout: Batch layout.
        cfg: Model config (mask_ratio, anchor_policy, masking, anchor_group_mask, r_extra, r_out,
            budget, supersample).
        generator: Optional random generator (deterministic masks).

    Returns:
        The masks.
    """
    dev = layout.img_set.device
    anchor = select_anchor(layout, cfg.anchor_policy, generator)
    is_anchor_img = torch.zeros(layout.num_images, dtype=torch.bool, device=dev)
    is_anchor_img[anchor[anchor >= 0]] = True
    tok_anchor = is_anchor_img[layout.tok_img]
    per_group_mask, anchor_tok_mask = _anchor_token_masks(layout, cfg, anchor, is_anchor_img, generator)
    # Drawn for every policy (unused by ``independent``) so the budget draw after it stays the same.
    u_dec = rand_uniform(layout.num_tokens, generator, dev)
    if cfg.masking == "independent":
        masked = per_group_mask
        protected = torch.zeros(layout.num_tokens, dtype=torch.bool, device=dev)
        rho = torch.zeros(int(layout.cell_rc.shape[0]), device=dev)
        in_fp_cell = torch.zeros(int(layout.cell_rc.shape[0]), dtype=torch.bool, device=dev)
    else:
        ground = _masked_ground(layout, tok_anchor & anchor_tok_mask)
        masked, protected, rho, in_fp_cell = _footprint_mask(
            layout, cfg, anchor, is_anchor_img, ground, u_dec
        )
        masked = torch.where(tok_anchor, anchor_tok_mask, masked)
    # Reported for non-anchor tokens only: anchor tokens are never budget candidates, their mask is final.
    protected = protected & ~tok_anchor
    masked, budget = _apply_budget(layout, cfg, masked, tok_anchor, protected, generator)
    return MaskResult(masked, anchor, budget, protected, rho, in_fp_cell)


def _anchor_token_masks(
    layout: TokenLayout,
    cfg: A2MAEConfig,
    anchor: torch.Tensor,
    is_anchor_img: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ratio-``r`` masks of the tokens: one per slab, and the anchor's (shared by its groups or not).

    Args:
        layout: Batch layout.
        cfg: Model config (mask_ratio, masking, anchor_group_mask, stratified_anchor_mask).
        anchor: ``[B]`` anchor image per set.
        is_anchor_img: ``[N]`` bool.
        generator: Random generator: draws ``[T]`` token noise, then ``[Ncell]`` cell noise when the
            anchor's groups share one mask.

    Returns:
        ``(per_group_mask [T], anchor_tok_mask [T])`` bool: each slab masked at ratio ``r`` on its own,
        and the mask the anchor's tokens get (read only on anchor tokens).
    """
    dev = layout.img_set.device
    r = cfg.mask_ratio
    n_cells = int(layout.cell_rc.shape[0])
    slab_hw = (layout.img_hw[:, 0] * layout.img_hw[:, 1])[layout.slab_img]
    # At least one visible token per slab/image, so no set is ever empty.
    n_mask_slab = torch.minimum(torch.round(r * slab_hw.to(torch.float64)).long(), slab_hw - 1)
    # Stratified draw: the anchor's cells covered by another image of the set and the others are masked
    # at ratio r separately, so the ground under the nested images is masked at r too (not by chance).
    covered = torch.zeros(n_cells, dtype=torch.long, device=dev)
    if cfg.stratified_anchor_mask and cfg.masking != "independent":
        covered = anchor_coverage(layout, anchor, is_anchor_img)
    u_tok = rand_uniform(layout.num_tokens, generator, dev)
    per_group_mask = stratified_mask(layout.tok_slab, covered[layout.tok_cell], u_tok, n_mask_slab, r)
    if cfg.masking == "independent" or cfg.anchor_group_mask == "independent":
        return per_group_mask, per_group_mask
    u_cell = rand_uniform(n_cells, generator, dev)
    img_hw = layout.img_hw[:, 0] * layout.img_hw[:, 1]
    n_mask_img = torch.minimum(torch.round(r * img_hw.to(torch.float64)).long(), img_hw - 1)
    cell_mask = stratified_mask(layout.cell_img, covered, u_cell, n_mask_img, r)
    return per_group_mask, cell_mask[layout.tok_cell]


def _masked_ground(layout: TokenLayout, anchor_masked: torch.Tensor) -> torch.Tensor:
    """Masked anchor ground: ``[T]`` bool masked anchor tokens ``-> [Ncell]`` bool cells.

    Args:
        layout: Batch layout.
        anchor_masked: ``[T]`` bool, anchor tokens that are masked.

    Returns:
        ``[Ncell]`` bool, the cells where any of the anchor's groups is masked (their union).
    """
    ground = torch.zeros(int(layout.cell_rc.shape[0]), dtype=torch.bool, device=layout.img_set.device)
    ground[layout.tok_cell[anchor_masked]] = True
    return ground


def _footprint_mask(
    layout: TokenLayout,
    cfg: A2MAEConfig,
    anchor: torch.Tensor,
    is_anchor_img: torch.Tensor,
    ground: torch.Tensor,
    u_dec: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask the non-anchor tokens by where they fall on the anchor's masked ground (aligned/complementary).

    Args:
        layout: Batch layout.
        cfg: Model config (masking, r_extra, r_out, supersample).
        anchor: ``[B]`` anchor image per set.
        is_anchor_img: ``[N]`` bool.
        ground: ``[Ncell]`` bool, masked anchor ground.
        u_dec: ``[T]`` uniform noise for the random decisions.

    Returns:
        ``(masked [T] bool, protected [T] bool, rho [Ncell] float32, in_footprint [Ncell] bool)``;
        ``masked`` and ``protected`` are final only on non-anchor tokens.
    """
    rho, inside = project_to_anchor(layout, anchor, ground, cfg.supersample)
    na_cell = ~is_anchor_img[layout.cell_img]
    in_fp_cell = (inside >= 0.5) & na_cell
    rho = torch.where(in_fp_cell, rho, torch.zeros_like(rho))
    tok_rho = rho[layout.tok_cell]
    tok_in = in_fp_cell[layout.tok_cell]
    on_masked = tok_in & (tok_rho >= 0.5)
    if cfg.masking == "aligned":
        protected = on_masked
        free_in = tok_in & ~on_masked
    else:  # complementary: the visible anchor ground is what gets hidden elsewhere
        protected = tok_in & ~on_masked
        free_in = on_masked
    masked = torch.where(protected, True, torch.where(free_in, u_dec < cfg.r_extra, u_dec < cfg.r_out))
    return masked, protected, rho, in_fp_cell


def _apply_budget(
    layout: TokenLayout,
    cfg: A2MAEConfig,
    masked: torch.Tensor,
    tok_anchor: torch.Tensor,
    protected: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring each set's visible tokens to its budget by changing random non-anchor tokens.

    Args:
        layout: Batch layout.
        cfg: Model config (budget_fraction).
        masked: ``[T]`` bool, masks before the budget.
        tok_anchor: ``[T]`` bool, token of an anchor image.
        protected: ``[T]`` bool, masked tokens that must stay masked.
        generator: Random generator: draws ``[T]`` noise.

    Returns:
        ``(masked [T] bool, budget [B] long)``; ``budget = max(round(f * L_set), anchor visible)``.
    """
    dev = layout.img_set.device
    counts = layout.set_token_counts()
    anchor_vis = torch.zeros(layout.num_sets, dtype=torch.long, device=dev).index_add_(
        0, layout.tok_set, (tok_anchor & ~masked).long()
    )
    # Never below the anchor's visible tokens: the anchor keeps its ratio whatever the budget.
    budget = torch.maximum(torch.round(cfg.budget_fraction * counts.to(torch.float64)).long(), anchor_vis)
    visible = torch.zeros_like(budget).index_add_(0, layout.tok_set, (~masked).long())
    excess = (visible - budget).clamp(min=0)
    deficit = (budget - visible).clamp(min=0)
    u_bud = rand_uniform(layout.num_tokens, generator, dev)
    drop_cand = ~masked & ~tok_anchor
    fill_cand = masked & ~tok_anchor & ~protected
    # Two passes (not a loop over tokens): the lowest-noise candidates of each set are flipped.
    for cand, need, value in ((drop_cand, excess, True), (fill_cand, deficit, False)):
        idx = cand.nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        seg = layout.tok_set[idx]
        rank = segment_rank(seg, u_bud[idx])
        chosen = idx[rank < need[seg]]
        masked = masked.clone()
        masked[chosen] = value
    return masked, budget
