"""A plain MAE (He et al.) with timm ViT blocks: the reference for ``benchmarks/pretrain_step.py``.

Single images ``[B, C, H, W]``, fixed 2-D sin-cos position embeddings, per-sample random masking
(``argsort`` of uniform noise), encoder on the kept tokens, decoder over all tokens, norm-pix MSE on
the masked ones. Same block type (pre-norm, LayerNorm eps 1e-6, qkv bias, MLP ratio 4) as A²-MAE.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from a2mae.models.geo import sincos_2d
from a2mae.models.layers import init_weights
from a2mae.models.loss import normalise_patches


class PlainMAE(nn.Module):
    """MAE for one multispectral image per sample.

    Args:
        in_chans: Channels ``C``.
        patch_size: ``p``.
        embed_dim: Encoder width.
        depth: Encoder blocks.
        num_heads: Encoder heads.
        decoder_embed_dim: Decoder width.
        decoder_depth: Decoder blocks.
        decoder_num_heads: Decoder heads.
        mlp_ratio: MLP expansion.
    """

    def __init__(
        self,
        in_chans: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.p = patch_size
        self.in_chans = in_chans
        norm = nn.LayerNorm
        self.patch_embed = nn.Linear(in_chans * patch_size**2, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=_ln) for _ in range(depth)
        )
        self.norm = norm(embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=_ln)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm(decoder_embed_dim, eps=1e-6)
        self.head = nn.Linear(decoder_embed_dim, in_chans * patch_size**2)
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, L, C*p*p]``."""
        b, c, hh, ww = imgs.shape
        p = self.p
        x = imgs.reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (hh // p) * (ww // p), c * p * p)

    @staticmethod
    def pos_embed(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
        """Fixed 2-D sin-cos ``[h*w, dim]``."""
        rr, cc = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        return sincos_2d(cc.reshape(-1).float(), rr.reshape(-1).float(), dim)

    @staticmethod
    def random_masking(
        x: torch.Tensor, len_keep: int, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep ``len_keep`` random tokens per sample.

        Args:
            x: ``[B, L, D]``.
            len_keep: Tokens kept.
            noise: Optional ``[B, L]`` uniform noise (ascending: small is keep).

        Returns:
            ``(kept [B, len_keep, D], mask [B, L] (1 = masked), ids_restore [B, L])``.
        """
        b, n, d = x.shape
        if noise is None:
            noise = torch.rand(b, n, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        keep = ids_shuffle[:, :len_keep]
        kept = torch.gather(x, 1, keep[:, :, None].expand(-1, -1, d))
        mask = torch.ones(b, n, device=x.device)
        mask[:, :len_keep] = 0
        return kept, torch.gather(mask, 1, ids_restore), ids_restore

    def forward(self, imgs: torch.Tensor, len_keep: int) -> torch.Tensor:
        """Loss of one pass.

        Args:
            imgs: ``[B, C, H, W]``.
            len_keep: Visible tokens per sample.

        Returns:
            Scalar norm-pix MSE on masked patches.
        """
        h, w = imgs.shape[2] // self.p, imgs.shape[3] // self.p
        target = self.patchify(imgs)
        x = self.patch_embed(target)
        x = x + self.pos_embed(h, w, x.shape[-1], x.device)[None].to(x.dtype)
        x, mask, ids_restore = self.random_masking(x, len_keep)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        b, n = ids_restore.shape
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(b, n - x.shape[1], -1)], dim=1)
        x = torch.gather(x, 1, ids_restore[:, :, None].expand(-1, -1, x.shape[2]))
        x = x + self.pos_embed(h, w, x.shape[-1], x.device)[None].to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.head(self.decoder_norm(x))
        flat = target.reshape(b * n, 1, -1)
        tgt = normalise_patches(flat, torch.ones_like(flat, dtype=torch.bool))
        err = ((pred.reshape(b * n, -1) - tgt.reshape(b * n, -1)) ** 2).mean(-1).reshape(b, n)
        return (err * mask).sum() / mask.sum()


def _ln(dim: int, **kwargs: object) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)
