"""Transformer layers on *packed* variable-length sequences.

Sets of a batch have different numbers of tokens. Tokens are kept packed (``[T, D]``, no padding) for
every position-wise layer (LayerNorm, qkv, projection, MLP), which hold most of the FLOPs. The caller
orders the packed tokens so that sets of equal length are adjacent (:func:`bucket_order`); attention then
runs once per run of equal-length sets on a plain ``view`` (``[n, L, 3D]``) of the packed tensor: no
padding, no mask, no gather. Sets of one composition have one length, so a mixed batch costs one
``scaled_dot_product_attention`` call per distinct length and nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.mlp import Mlp
from torch import nn


def bucket_order(
    tok_set: torch.Tensor, tokens: torch.Tensor, num_sets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Order tokens set by set, sets of equal length adjacent (longest first).

    Args:
        tok_set: ``[T]`` set of every token of the batch.
        tokens: ``[M]`` selected token indices.
        num_sets: ``B``.

    Returns:
        ``(tokens reordered [M], lengths [B'] of the non-empty sets in packed order)``.
    """
    sets = tok_set[tokens]
    counts = torch.bincount(sets, minlength=num_sets)
    set_order = sorted(range(num_sets), key=lambda i: (-int(counts[i]), i))
    rank = torch.empty(num_sets, dtype=torch.long, device=tokens.device)
    rank[torch.tensor(set_order, device=tokens.device)] = torch.arange(num_sets, device=tokens.device)
    order = torch.sort(rank[sets] * (int(tokens.max()) + 1 if tokens.numel() else 1) + tokens).indices
    lengths = counts[torch.tensor(set_order, device=tokens.device)]
    return tokens[order], lengths[lengths > 0]


class Packer:
    """Runs of equal-length sets in a packed ``[T, ...]`` tensor (see :func:`bucket_order`).

    Args:
        lengths: ``[B]`` tokens of each set, in packed order; equal lengths must be adjacent.
    """

    def __init__(self, lengths: torch.Tensor) -> None:
        self.lengths = lengths.to(torch.long)
        self.batch = int(lengths.numel())
        self.total = int(self.lengths.sum())
        self.seg = torch.repeat_interleave(torch.arange(self.batch, device=lengths.device), self.lengths)
        self.runs: list[tuple[int, int, int]] = []  # (first row, sets, length)
        row = 0
        for ln in self.lengths.tolist():
            if self.runs and self.runs[-1][2] == ln and self.runs[-1][0] + self.runs[-1][1] * ln == row:
                first, n, _ = self.runs[-1]
                self.runs[-1] = (first, n + 1, ln)
            elif ln in (r[2] for r in self.runs):
                raise ValueError("sets of equal length must be adjacent in the packed tensor (bucket_order)")
            else:
                self.runs.append((row, 1, ln))
            row += ln

    @property
    def pad_fraction(self) -> float:
        """Share of attention rows that are padding: always 0 (runs of equal length need none)."""
        return 0.0

    def attend(self, qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
        """Self-attention within each set.

        Args:
            qkv: ``[T, 3D]`` packed query/key/value projections.
            num_heads: Heads.

        Returns:
            ``[T, D]`` attention output (before the output projection).
        """
        d = qkv.shape[1] // 3
        if len(self.runs) == 1:
            _, n, ln = self.runs[0]
            return _sdpa(qkv.view(n, ln, 3 * d), num_heads).reshape(n * ln, d)
        # One split (its backward is one cat), not one slice per run (each slice's backward would
        # materialise a full-size zero gradient).
        parts = qkv.split([n * ln for _, n, ln in self.runs])
        outs = [
            _sdpa(x.view(n, ln, 3 * d), num_heads).reshape(n * ln, d)
            for x, (_, n, ln) in zip(parts, self.runs, strict=True)
        ]
        return torch.cat(outs)


def _sdpa(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, L, 3D] -> [B, L, D]`` multi-head scaled dot-product attention."""
    b, seq_len, d3 = qkv.shape
    d = d3 // 3
    q, k, v = qkv.reshape(b, seq_len, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)
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
        out: torch.Tensor = self.proj(packer.attend(self.qkv(x), self.num_heads))
        return out


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
