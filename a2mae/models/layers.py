"""Transformer layers on *packed* variable-length sequences.

Sets of a batch have different numbers of tokens. Tokens are kept packed (``[T, D]``, set after set, no
padding) for every position-wise layer (LayerNorm, qkv, projection, MLP), which hold most of the FLOPs.
Only attention needs ``[B, L, ...]`` tensors: sets are grouped into buckets of similar length (sets of the
same composition have the same length), each bucket is padded to its longest set and attended with a
key-padding mask (``scaled_dot_product_attention``). A bucket of equal lengths needs no mask and no
padding; a batch of one composition is a plain reshape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


@dataclass
class _Bucket:
    """Sets attended together: ``n`` sets padded to ``length`` rows gathered by ``index``."""

    n: int
    length: int
    index: torch.Tensor  # [n * length] packed rows (padding rows repeat a real row)
    mask: torch.Tensor | None  # [n, 1, 1, length] True = real key; None when no padding
    keep: torch.Tensor | None  # [n_real] real rows of the padded output; None when no padding


class Packer:
    """Moves packed per-set sequences ``[T, ...]`` to and from padded attention buckets.

    Sets are sorted by length and grouped greedily into buckets whose shortest set is at least
    ``1 - max_pad`` of the longest, so sets of the same composition share a bucket with no padding and a
    mixed batch wastes at most ``max_pad`` of each bucket's rows. A bucket of equal lengths gets no mask.

    Args:
        lengths: ``[B]`` tokens of each set (the packed tensor holds them set after set).
        max_pad: Largest share of padding rows tolerated inside one bucket.
    """

    def __init__(self, lengths: torch.Tensor, max_pad: float = 0.1) -> None:
        self.lengths = lengths.to(torch.long)
        self.batch = int(lengths.numel())
        self.total = int(self.lengths.sum())
        dev = lengths.device
        self.seg = torch.repeat_interleave(torch.arange(self.batch, device=dev), self.lengths)
        lens = self.lengths.tolist()
        self.uniform = self.batch > 0 and len(set(lens)) == 1
        self.buckets: list[_Bucket] = []
        self.inverse: torch.Tensor | None = None
        self.padded_rows = self.total
        if self.uniform or self.batch == 0:
            return
        start = (torch.cumsum(self.lengths, 0) - self.lengths).tolist()
        order = sorted((i for i in range(self.batch) if lens[i] > 0), key=lambda i: -lens[i])
        groups: list[list[int]] = []
        for i in order:
            if groups and lens[i] >= (1.0 - max_pad) * lens[groups[-1][0]]:
                groups[-1].append(i)
            else:
                groups.append([i])
        gathered, padded = [], 0
        for g in groups:
            lmax = lens[g[0]]
            pos = torch.arange(lmax, device=dev)
            ln = torch.tensor([lens[i] for i in g], device=dev)
            st = torch.tensor([start[i] for i in g], device=dev)
            valid = pos[None] < ln[:, None]  # [nb, Lb]
            # Padding rows repeat the set's first token: masked as keys, dropped as queries.
            index = (st[:, None] + torch.where(valid, pos[None], torch.zeros_like(pos)[None])).reshape(-1)
            same = bool((ln == lmax).all())
            keep = None if same else valid.reshape(-1).nonzero().squeeze(1)
            mask = None if same else valid[:, None, None, :]
            self.buckets.append(_Bucket(len(g), lmax, index, mask, keep))
            gathered.append(index if keep is None else index[keep])
            padded += len(g) * lmax
        self.padded_rows = padded
        cat = torch.cat(gathered)
        self.inverse = torch.empty_like(cat)
        self.inverse[cat] = torch.arange(len(cat), device=dev)

    @property
    def pad_fraction(self) -> float:
        """Share of the attention rows that are padding."""
        return 0.0 if not self.padded_rows else 1.0 - self.total / self.padded_rows

    def attend(self, qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
        """Self-attention within each set.

        Args:
            qkv: ``[T, 3D]`` packed query/key/value projections.
            num_heads: Heads.

        Returns:
            ``[T, D]`` attention output (before the output projection).
        """
        d = qkv.shape[1] // 3
        if self.uniform:
            return _sdpa(qkv.reshape(self.batch, -1, 3 * d), num_heads, None).reshape(self.total, d)
        outs = []
        for bk in self.buckets:
            x = qkv.index_select(0, bk.index).reshape(bk.n, bk.length, 3 * d)
            out = _sdpa(x, num_heads, bk.mask).reshape(bk.n * bk.length, d)
            outs.append(out if bk.keep is None else out.index_select(0, bk.keep))
        return torch.cat(outs).index_select(0, self.inverse)


def _sdpa(qkv: torch.Tensor, num_heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, L, 3D] -> [B, L, D]`` multi-head SDPA with an optional ``[B, 1, 1, L]`` key mask."""
    b, seq_len, d3 = qkv.shape
    d = d3 // 3
    q, k, v = qkv.reshape(b, seq_len, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, seq_len, d)


class PackedAttention(nn.Module):
    """Multi-head self-attention within each set of a packed batch (SDPA)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, packer: Packer) -> torch.Tensor:
        """Attend.

        Args:
            x: ``[T, D]`` packed tokens.
            packer: Layout of the sets in ``x``.

        Returns:
            ``[T, D]``.
        """
        return self.proj(packer.attend(self.qkv(x), self.num_heads))


class Block(nn.Module):
    """Pre-norm ViT block (LayerNorm eps 1e-6, qkv bias, MLP ratio 4, GELU) on packed tokens.

    Stochastic depth drops the residual branch per *set* (not per token).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PackedAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor, packer: Packer) -> torch.Tensor:
        if self.drop_path == 0.0 or not self.training:
            return x
        keep = (torch.rand(packer.batch, device=x.device) >= self.drop_path).to(x.dtype)
        return x * (keep / (1.0 - self.drop_path))[packer.seg][:, None]

    def forward(self, x: torch.Tensor, packer: Packer) -> torch.Tensor:
        """``[T, D] -> [T, D]``."""
        x = x + self._drop(self.attn(self.norm1(x), packer), packer)
        return x + self._drop(self.mlp(self.norm2(x)), packer)


def init_weights(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform Linear weights, zero bias, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
