"""A²-MAE: anchor-aware masked autoencoder over co-located multi-sensor image sets.

The MAE decomposition (facebookresearch/mae) adapted to sets of mixed composition:

* :meth:`A2MAE.tokenize` -- images -> :class:`~a2mae.models.layout.TokenLayout` (patchify per group);
* :func:`~a2mae.models.masking.anchor_aware_mask` -- anchor-aware masks in ground coordinates;
* :meth:`A2MAE.forward_encoder` -- ViT on the visible tokens of each set (packed, see ``layers``);
* :meth:`A2MAE.forward_decoder` -- shared decoder over visible + mask tokens, one head per key;
* :meth:`A2MAE.forward_loss` -- norm-pix MSE on masked tokens, per image -> per set -> batch.

Pure torch + timm layers: no file I/O, Ray or MLflow here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from a2mae.models.config import A2MAEConfig
from a2mae.models.embed import GroupPatchEmbed, MetadataEmbedding, MetaDrop, key_name, take_rows
from a2mae.models.layers import Block, Packer, bucket_order, init_weights
from a2mae.models.layout import TokenLayout, build_layout, unpatchify
from a2mae.models.loss import LossParts, masked_patch_loss, patch_stats
from a2mae.models.masking import anchor_aware_mask, rand_uniform, segment_rank
from a2mae.models.vocab import ModelInputError, Vocabulary
from a2mae.sensors.registry import SensorRegistry
from a2mae.types import ImageSample, SetBatch


@dataclass
class A2MAEOutput:
    """Result of one pre-training forward pass.

    Attributes:
        loss: Scalar training loss.
        loss_per_sensor: Mean per-image loss of each sensor present (detached, for logging).
        loss_per_image: ``[N]`` per-image loss (detached; 0 where the image had no target).
        num_tokens: Tokens of the batch (all images, all groups).
        num_visible_tokens: Tokens the encoder saw.
        num_decoder_tokens: Tokens the decoder processed.
        encoder_pad_fraction: Share of the padded attention rows that were padding in the encoder.
        decoder_pad_fraction: Same in the decoder.
        mask: ``[T]`` bool, True = masked.
        anchor: ``[B]`` anchor image index of each set (-1: no image, or a mask was given).
        pred: ``[T, C_max, p*p]`` detached predictions in the (norm-pix) target space (0: not decoded).
        decoded: ``[T]`` bool, tokens the decoder processed.
        layout: The batch layout (for :meth:`A2MAE.reconstruct`).
    """

    loss: torch.Tensor
    loss_per_sensor: dict[str, torch.Tensor]
    loss_per_image: torch.Tensor
    num_tokens: int
    num_visible_tokens: int
    num_decoder_tokens: int
    encoder_pad_fraction: float
    decoder_pad_fraction: float
    mask: torch.Tensor
    anchor: torch.Tensor
    pred: torch.Tensor = field(repr=False)
    decoded: torch.Tensor = field(repr=False)
    layout: TokenLayout = field(repr=False)


@dataclass
class FeatureOutput:
    """Encoder features for downstream tasks.

    Attributes:
        pooled: ``[B, D]`` (single images or set images) or ``[B, 2, D]`` (pairs): mean of the final
            normalised tokens of each image.
        maps: One tensor per level (blocks at depth/4, depth/2, 3 depth/4, depth): ``[B, D, h, w]`` or
            ``[B, 2, D, h, w]``; token groups of an image are averaged per cell.
    """

    pooled: torch.Tensor
    maps: list[torch.Tensor]


class A2MAE(nn.Module):
    """Anchor-aware MAE.

    Args:
        config: Architecture and objective.
        registry: Sensor registry to take the sensors from (the caller builds it once).
    """

    def __init__(self, config: A2MAEConfig, registry: SensorRegistry) -> None:
        super().__init__()
        self.config = config
        self.vocab = Vocabulary.build(registry, config.sensors)
        self.sensor_entries = registry.to_dict(self.vocab.sensor_ids)
        c = config
        p = c.patch_size
        # ------------------------------------------------------------------------------- encoder
        self.patch_embed = GroupPatchEmbed(self.vocab, p, c.embed_dim)
        self.meta_embed = MetadataEmbedding(self.vocab, c.embed_dim, p, c.geo_encoding, c.g_ref_m)
        dpr = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_ratio, drop_path=d) for d in dpr)
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        # ------------------------------------------------------------------------------- decoder
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(c.decoder_embed_dim))
        self.decoder_meta_embed = MetadataEmbedding(
            self.vocab, c.decoder_embed_dim, p, c.geo_encoding, c.g_ref_m
        )
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio) for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=1e-6)
        self.heads = nn.ModuleDict(
            {
                key_name(*k): nn.Linear(c.decoder_embed_dim, len(b) * p * p)
                for k, b in zip(self.vocab.keys, self.vocab.key_bands, strict=True)
            }
        )
        self.initialize_weights()

    # ------------------------------------------------------------------------------------- setup
    def initialize_weights(self) -> None:
        """MAE init: xavier Linear (patch embeddings included), N(0, 0.02) tables and mask token."""
        self.apply(init_weights)
        self.meta_embed.init_tables()
        self.decoder_meta_embed.init_tables()
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: biases, norms, embedding tables, unknowns."""
        out = set()
        for name, prm in self.named_parameters():
            if prm.ndim < 2 or ("meta_embed." in name and "proj" not in name and "mlp" not in name):
                out.add(name)
        out.add("mask_token")
        return out

    @property
    def sensor_ids(self) -> list[str]:
        """Sensors the model is built for."""
        return self.vocab.sensor_ids

    # ---------------------------------------------------------------------------------- tokenise
    def tokenize(self, batch: SetBatch) -> TokenLayout:
        """Layout of a batch (patches, indices, ground geometry)."""
        num_sets = max(batch.num_sets, int(batch.set_index.max()) + 1 if len(batch.set_index) else 0)
        return build_layout(batch.images, batch.set_index, num_sets, self.vocab, self.config.patch_size)

    def sample_metadata_dropout(self, layout: TokenLayout, generator: torch.Generator | None) -> MetaDrop:
        """Metadata dropped this step: location per set, GSD and time per image (training only)."""
        dev = layout.img_set.device
        p = self.config.metadata_dropout
        if not self.training or p == 0:
            return MetaDrop.none(layout.num_images, dev)
        loc = rand_uniform(layout.num_sets, generator, dev) < p
        return MetaDrop(
            location=loc[layout.img_set],
            gsd=rand_uniform(layout.num_images, generator, dev) < p,
            time=rand_uniform(layout.num_images, generator, dev) < p,
        )

    # ----------------------------------------------------------------------------------- encoder
    def embed_tokens(self, layout: TokenLayout, tokens: torch.Tensor, drop: MetaDrop) -> torch.Tensor:
        """Patch embedding plus additive metadata embeddings of some tokens ``[M, D]``."""
        e: torch.Tensor = self.patch_embed(layout, tokens) + self.meta_embed(layout, tokens, drop)
        return e

    def forward_encoder(
        self,
        layout: TokenLayout,
        tokens: torch.Tensor,
        drop: MetaDrop,
        capture: Sequence[int] = (),
    ) -> tuple[torch.Tensor, torch.Tensor, Packer, list[torch.Tensor]]:
        """Encode some tokens (the visible ones), each set attending within itself.

        Args:
            layout: Batch layout.
            tokens: ``[V]`` token indices (any order).
            drop: Metadata dropped this step.
            capture: Block indices whose outputs to return as well.

        Returns:
            ``(latent [V, D] after the final norm, tokens [V] in the packed order of latent, packer,
            captured [V, D] per index)``.
        """
        tokens, lengths = bucket_order(layout.tok_set, tokens, layout.num_sets)
        packer = Packer(lengths)
        x = self.embed_tokens(layout, tokens, drop)
        captured = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, packer)
            if i in capture:
                captured.append(x)
        return self.norm(x), tokens, packer, captured

    # ----------------------------------------------------------------------------------- decoder
    def decoder_tokens(
        self, layout: TokenLayout, masked: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``[T]`` bool tokens for the decoder: all visible ones plus masked ones up to the per-set cap."""
        cap = self.config.decoder_token_cap
        counts = layout.set_token_counts()
        if cap is None or int(counts.max()) <= cap:
            return torch.ones_like(masked)
        vis = torch.zeros_like(counts).index_add_(0, layout.tok_set, (~masked).long())
        room = (cap - vis).clamp(min=0)
        idx = masked.nonzero().squeeze(1)
        seg = layout.tok_set[idx]
        keep = segment_rank(seg, rand_uniform(len(idx), generator, masked.device)) < room[seg]
        decoded = ~masked
        decoded[idx[keep]] = True
        return decoded

    def forward_decoder(
        self,
        layout: TokenLayout,
        latent: torch.Tensor,
        visible: torch.Tensor,
        decoded: torch.Tensor,
        drop: MetaDrop,
    ) -> tuple[torch.Tensor, torch.Tensor, Packer]:
        """Reconstruct the decoded tokens.

        Args:
            layout: Batch layout.
            latent: ``[V, D]`` encoder output of ``visible``.
            visible: ``[V]`` visible tokens, in the order of ``latent``.
            decoded: ``[T]`` bool tokens to decode (includes every visible token).
            drop: Metadata dropped this step.

        Returns:
            ``(pred [L, C_max, p*p], tokens [L], packer)`` for the decoded tokens, in packed order.
        """
        tokens, lengths = bucket_order(layout.tok_set, decoded.nonzero().squeeze(1), layout.num_sets)
        pos = torch.full((layout.num_tokens,), -1, dtype=torch.long, device=tokens.device)
        pos[tokens] = torch.arange(len(tokens), device=tokens.device)
        y = self.decoder_embed(latent)
        vis_pos = pos[visible]
        full = y.new_zeros(len(tokens), y.shape[1]).index_copy(0, vis_pos, y)
        is_vis = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device)
        is_vis[vis_pos] = True
        x = torch.where(is_vis[:, None], full, self.mask_token.to(y.dtype)[None])
        x = x + self.decoder_meta_embed(layout, tokens, drop)
        packer = Packer(lengths)
        for blk in self.decoder_blocks:
            x = blk(x, packer)
        x = self.decoder_norm(x)
        return self._predict(layout, x, tokens), tokens, packer

    def _predict(self, layout: TokenLayout, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        cmax, pp = layout.patches.shape[1:]
        keys = layout.tok_key[tokens]
        parts, order = [], []
        for k in torch.unique(keys).tolist():
            rows = (keys == k).nonzero().squeeze(1)
            out = self.heads[key_name(*self.vocab.keys[k])](take_rows(x, rows))  # [m, c*pp]
            parts.append(nn.functional.pad(out, (0, cmax * pp - out.shape[1])))
            order.append(rows)
        inv = torch.empty_like(keys)
        inv[torch.cat(order)] = torch.arange(len(keys), device=keys.device)
        return take_rows(torch.cat(parts), inv).reshape(len(tokens), cmax, pp)

    # -------------------------------------------------------------------------------------- loss
    def target_valid(self, layout: TokenLayout, tokens: torch.Tensor) -> torch.Tensor:
        """``[M, C_max, p*p]`` bool entries of the target that count (present bands, valid pixels)."""
        v = layout.chan_valid[tokens][:, :, None].expand(-1, -1, layout.patches.shape[2])
        if layout.pix_valid is not None:
            v = v & layout.pix_valid[tokens][:, None, :]
        return v

    def forward_loss(
        self, layout: TokenLayout, pred: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor
    ) -> LossParts:
        """Norm-pix MSE on the masked decoded tokens (per image -> per set -> batch).

        Args:
            layout: Batch layout.
            pred: ``[L, C_max, p*p]`` predictions of ``tokens``.
            tokens: ``[L]`` decoded tokens.
            masked: ``[T]`` bool mask of the batch.
        """
        rows = masked[tokens].nonzero().squeeze(1)  # only masked tokens are targets
        targets = tokens[rows]
        pred = take_rows(pred.flatten(1), rows).reshape(len(rows), *pred.shape[1:])
        return masked_patch_loss(
            pred,
            layout.patches[targets],
            self.target_valid(layout, targets),
            torch.ones(len(rows), dtype=torch.bool, device=pred.device),
            layout.tok_img[targets],
            layout.img_set,
            layout.num_sets,
            norm_pix=self.config.norm_pix_loss,
        )

    # ----------------------------------------------------------------------------------- forward
    def forward(
        self, batch: SetBatch, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> A2MAEOutput:
        """One pre-training pass: tokenise, mask, encode, decode, loss.

        Args:
            batch: Image sets of mixed composition.
            generator: Random generator for anchors, masks, metadata dropout and the decoder cap.
            mask: Optional ``[T]`` bool mask to use instead of anchor-aware masking (tests, ablations).

        Returns:
            The output (loss, per-sensor losses, counts, masks, predictions).
        """
        layout = self.tokenize(batch)
        if mask is None:
            mres = anchor_aware_mask(layout, self.config, generator)
            masked = mres.masked
            anchor = mres.anchor
        else:
            if mask.shape != (layout.num_tokens,):
                raise ModelInputError(f"mask has shape {tuple(mask.shape)}; expected ({layout.num_tokens},)")
            masked = mask.to(layout.tok_set.device, torch.bool)
            anchor = torch.full((layout.num_sets,), -1, dtype=torch.long, device=masked.device)
        drop = self.sample_metadata_dropout(layout, generator)
        latent, visible, enc_packer, _ = self.forward_encoder(layout, (~masked).nonzero().squeeze(1), drop)
        decoded = self.decoder_tokens(layout, masked, generator)
        pred, tokens, dec_packer = self.forward_decoder(layout, latent, visible, decoded, drop)
        parts = self.forward_loss(layout, pred, tokens, masked)
        full_pred = pred.detach().new_zeros(layout.patches.shape).index_copy_(0, tokens, pred.detach())
        return A2MAEOutput(
            loss=parts.loss,
            loss_per_sensor=self._per_sensor(layout, parts),
            loss_per_image=parts.per_image.detach(),
            num_tokens=layout.num_tokens,
            num_visible_tokens=len(visible),
            num_decoder_tokens=len(tokens),
            encoder_pad_fraction=enc_packer.pad_fraction,
            decoder_pad_fraction=dec_packer.pad_fraction,
            mask=masked,
            anchor=anchor,
            pred=full_pred,
            decoded=decoded,
            layout=layout,
        )

    def _per_sensor(self, layout: TokenLayout, parts: LossParts) -> dict[str, torch.Tensor]:
        out = {}
        per = parts.per_image.detach()
        for si, sid in enumerate(self.vocab.sensor_ids):
            sel = (layout.img_sensor == si) & parts.image_has_target
            if bool(sel.any()):
                out[sid] = per[sel].mean()
        return out

    # ---------------------------------------------------------------------------- visualisation
    @torch.no_grad()
    def reconstruct(
        self, batch: SetBatch, out: A2MAEOutput
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per image ``(target, masked input, reconstruction)``, each ``[C, H, W]`` in the normalised space.

        The masked input has masked tokens' channels zeroed; the reconstruction shows the prediction on
        masked (decoded) tokens, de-normalised with each target patch's statistics when norm-pix is on,
        and the input on visible tokens. Channels of bands outside every token group are left as is.
        """
        lay = out.layout
        p = lay.patch_size
        pred = out.pred.detach()
        if self.config.norm_pix_loss:
            mean, std = patch_stats(
                lay.patches, self.target_valid(lay, torch.arange(lay.num_tokens, device=pred.device))
            )
            pred = pred * std + mean
        show = out.mask & out.decoded
        result = []
        for n, im in enumerate(batch.images):
            target = im.pixels.detach().to(torch.float32)
            masked_in, recon = target.clone(), target.clone()
            h, w = (int(v) for v in lay.img_hw[n])
            for s in (lay.slab_img == n).nonzero().squeeze(1).tolist():
                t0 = int(lay.slab_start[s])
                sl = slice(t0, t0 + h * w)
                chans = lay.slab_chan[s]
                m = out.mask[sl][:, None, None].to(torch.float32)
                shown = show[sl][:, None, None]
                tgt = lay.patches[sl]
                img_in = unpatchify(tgt * (1 - m), h, w, p)
                img_rec = unpatchify(torch.where(shown, pred[sl], tgt), h, w, p)
                for slot, ch in enumerate(chans.tolist()):
                    if ch >= 0:
                        masked_in[ch] = img_in[slot]
                        recon[ch] = img_rec[slot]
            result.append((target, masked_in, recon))
        return result

    # ------------------------------------------------------------------------------- downstream
    def forward_features(
        self, inputs: Sequence[ImageSample] | Sequence[Sequence[ImageSample]] | SetBatch, joint: bool = False
    ) -> FeatureOutput:
        """Encoder features without masking, for one image or a bi-temporal pair per sample.

        Args:
            inputs: ``[ImageSample, ...]`` (one image per sample), ``[(before, after), ...]`` (pairs) or a
                :class:`SetBatch` (features per image, each set encoded jointly). Metadata may be missing
                (no corners, GSD or datetime): the learned unknown embeddings are used.
            joint: For pairs, encode both images as one set (attention across them); default: siamese
                (each image alone).

        Returns:
            Pooled embeddings and multi-level token maps (see :class:`FeatureOutput`).

        Raises:
            ModelInputError: Empty input, pairs not of two images, or images of different sizes.
        """
        shape: tuple[int, ...]  # [N] per image, or [N, 2] per pair
        if isinstance(inputs, SetBatch):
            images, set_index, shape = list(inputs.images), inputs.set_index, (len(inputs.images),)
            num_sets = max(inputs.num_sets, int(set_index.max()) + 1 if len(set_index) else 0)
        elif inputs and isinstance(inputs[0], ImageSample):
            images = list(inputs)  # type: ignore[arg-type]
            set_index, shape, num_sets = torch.arange(len(images)), (len(images),), len(images)
        elif inputs:
            pairs = [tuple(pr) for pr in inputs]  # type: ignore[arg-type]
            if any(len(pr) != 2 for pr in pairs):
                raise ModelInputError("forward_features: a pair sample must hold exactly two images")
            images = [im for pr in pairs for im in pr]
            set_index = torch.arange(len(images)) // 2 if joint else torch.arange(len(images))
            shape, num_sets = (len(pairs), 2), len(pairs) if joint else len(images)
        else:
            raise ModelInputError("forward_features: no image given")
        sizes = {tuple(im.pixels.shape[1:]) for im in images}
        if len(sizes) > 1:
            raise ModelInputError(f"forward_features: images must share one size, got {sorted(sizes)}")
        layout = build_layout(images, set_index, num_sets, self.vocab, self.config.patch_size)
        drop = MetaDrop.none(layout.num_images, layout.img_set.device)
        tokens = torch.arange(layout.num_tokens, device=layout.img_set.device)
        levels = self.config.feature_blocks
        latent, tokens, _, captured = self.forward_encoder(layout, tokens, drop, capture=levels[:-1])
        h, w = (int(v) for v in layout.img_hw[0])
        maps = [
            self._cell_mean(layout, tokens, x).reshape(*shape, h, w, -1).movedim(-1, -3)
            for x in [*captured, latent]
        ]
        n_tok = torch.zeros(layout.num_images, device=latent.device).index_add_(
            0, layout.tok_img, torch.ones(layout.num_tokens, device=latent.device)
        )
        pooled = latent.new_zeros(layout.num_images, latent.shape[1]).index_add(
            0, layout.tok_img[tokens], latent
        )
        pooled = pooled / n_tok[:, None]
        return FeatureOutput(pooled=pooled.reshape(*shape, -1), maps=maps)

    @staticmethod
    def _cell_mean(layout: TokenLayout, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Average the groups of each cell: ``[T, D]`` (rows of ``tokens``) ``-> [Ncell, D]``."""
        n_cells = int(layout.cell_rc.shape[0])
        cells = layout.tok_cell[tokens]
        s = x.new_zeros(n_cells, x.shape[1]).index_add(0, cells, x)
        c = x.new_zeros(n_cells).index_add(0, cells, torch.ones_like(x[:, 0]))
        return s / c.clamp(min=1)[:, None]
