"""Token embeddings: one patch embedding per (sensor, group) and the additive metadata embeddings.

The additive combination (docs/model.md, "Geographic and metadata encoding")::

    z = PatchEmbed_{sensor,g}(x) + PE_loc(x_ij, y_ij) + E_global(lat0, lon0) + E_gsd(Geo_GSD)
        + E_spec(g) + E_time(t) + E_period + E_sensor (+ learned "band missing" vectors)

Unknown or dropped metadata uses learned "unknown" vectors: no corners -> ``unknown_loc`` instead of
E_global (PE_loc then comes from the nominal north-up grid of the image's GSD, so tokens keep their
relative positions); no GSD -> ``unknown_gsd``; no datetime -> ``unknown_time`` and period ``na``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from a2mae.models import geo
from a2mae.models.layout import TokenLayout
from a2mae.models.vocab import Vocabulary


@dataclass
class MetaDrop:
    """Per-image metadata dropped for this step (metadata dropout). All ``[N]`` bool."""

    location: torch.Tensor
    gsd: torch.Tensor
    time: torch.Tensor

    @classmethod
    def none(cls, n: int, device: torch.device) -> MetaDrop:
        """Nothing dropped."""
        z = torch.zeros(n, dtype=torch.bool, device=device)
        return cls(z, z, z)


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a 2-D ``x``, via ``F.embedding`` (its backward is much faster than indexing's)."""
    return F.embedding(index, x)


def key_name(sensor: str, group: str) -> str:
    """Module-dict key of a (sensor, group) pair."""
    return f"{sensor}-{group}"


class GroupPatchEmbed(nn.Module):
    """One ``Linear(c_g*p*p, D)`` per (sensor, group) on patchified pixels (= ``Conv2d(c_g, D, p, p)``)."""

    def __init__(self, vocab: Vocabulary, patch_size: int, dim: int) -> None:
        super().__init__()
        pp = patch_size * patch_size
        self.vocab = vocab
        self.proj = nn.ModuleDict(
            {
                key_name(*k): nn.Linear(len(b) * pp, dim)
                for k, b in zip(vocab.keys, vocab.key_bands, strict=True)
            }
        )

    def forward(self, layout: TokenLayout, tokens: torch.Tensor) -> torch.Tensor:
        """Embed some tokens.

        Args:
            layout: Batch layout.
            tokens: ``[M]`` token indices.

        Returns:
            ``[M, D]`` in the order of ``tokens``.
        """
        keys = layout.tok_key[tokens]
        parts, order = [], []
        for k in torch.unique(keys).tolist():
            rows = (keys == k).nonzero().squeeze(1)
            c = len(self.vocab.key_bands[k])
            x = layout.patches[tokens[rows], :c].flatten(1)  # [m, c*pp]
            parts.append(self.proj[key_name(*self.vocab.keys[k])](x))
            order.append(rows)
        out = torch.cat(parts)
        inv = torch.empty_like(keys)
        inv[torch.cat(order)] = torch.arange(len(keys), device=keys.device)
        return take_rows(out, inv)


class MetadataEmbedding(nn.Module):
    """Additive metadata embeddings at one width (the encoder and the decoder each own one)."""

    key_type: torch.Tensor  # [keys] group type of each key: a non-persistent buffer

    def __init__(
        self, vocab: Vocabulary, dim: int, patch_size: int, geo_encoding: bool, g_ref_m: float
    ) -> None:
        super().__init__()
        self.dim = dim
        self.patch_size = patch_size
        self.geo_encoding = geo_encoding
        self.g_ref_m = g_ref_m
        self.key_type = nn.Buffer(torch.tensor(vocab.key_type, dtype=torch.long), persistent=False)
        self.spec = nn.Embedding(len(vocab.group_types), dim)
        self.sensor = nn.Embedding(len(vocab.sensors), dim)
        self.period = nn.Embedding(3, dim)
        self.band_missing = nn.Parameter(torch.zeros(len(vocab.band_keys), dim))
        self.time_proj = nn.Linear(geo.TIME_FEAT_DIM, dim)
        self.unknown_time = nn.Parameter(torch.zeros(dim))
        if geo_encoding:
            self.global_mlp = nn.Sequential(
                nn.Linear(geo.GLOBAL_FEAT_DIM, dim), nn.GELU(), nn.Linear(dim, dim)
            )
            self.gsd_proj = nn.Linear(geo.GSD_FEAT_DIM, dim)
            self.unknown_loc = nn.Parameter(torch.zeros(dim))
            self.unknown_gsd = nn.Parameter(torch.zeros(dim))

    def init_tables(self) -> None:
        """Normal(0, 0.02) for the embedding tables and unknown vectors (after the global init)."""
        for t in (
            self.spec.weight,
            self.sensor.weight,
            self.period.weight,
            self.band_missing,
            self.unknown_time,
        ):
            nn.init.normal_(t, std=0.02)
        if self.geo_encoding:
            nn.init.normal_(self.unknown_loc, std=0.02)
            nn.init.normal_(self.unknown_gsd, std=0.02)

    def image_terms(self, layout: TokenLayout, drop: MetaDrop) -> torch.Tensor:
        """Per-image sum of E_global, E_gsd, E_time, E_period and E_sensor ``[N, dim]``."""
        e: torch.Tensor = self.sensor(layout.img_sensor)
        has_time = layout.img_has_time & ~drop.time
        year, doy = layout.img_time[:, 0], layout.img_time[:, 1].clamp(min=1)
        t = self.time_proj(geo.time_features(year, doy))
        e = e + torch.where(has_time[:, None], t, self.unknown_time[None])
        e = e + self.period(torch.where(has_time, layout.img_period, torch.full_like(layout.img_period, 2)))
        if self.geo_encoding:
            has_loc = layout.img_has_corners & ~drop.location
            g = self.global_mlp(geo.global_features(layout.set_centre[layout.img_set]))
            e = e + torch.where(has_loc[:, None], g, self.unknown_loc[None])
            has_gsd = layout.img_has_gsd & ~drop.gsd
            s = self.gsd_proj(geo.gsd_features(layout.img_gsd * self.patch_size, self.g_ref_m))
            e = e + torch.where(has_gsd[:, None], s, self.unknown_gsd[None])
        return e

    def slab_terms(self, layout: TokenLayout) -> torch.Tensor:
        """Per-slab E_spec plus the sum of its missing-band vectors ``[S, dim]``."""
        miss = layout.slab_missing.to(self.band_missing.dtype)[:, :, None]  # [S, Cmax, 1]
        terms: torch.Tensor = self.spec(self.key_type[layout.slab_key]) + (
            miss * F.embedding(layout.slab_band_row, self.band_missing)
        ).sum(1)
        return terms

    def cell_pos(self, layout: TokenLayout, cells: torch.Tensor, drop: MetaDrop) -> torch.Tensor:
        """PE_loc (Eq. 2) of some cells, or the grid-index sin-cos when geo encoding is off ``[M, dim]``."""
        if self.geo_encoding:
            cell_img = layout.cell_img[cells]
            use_nom = drop.location[cell_img] | ~layout.img_has_corners[cell_img]
            xy = torch.where(use_nom[:, None], layout.cell_xy_nominal[cells], layout.cell_xy[cells])
            return geo.metric_pos_embed(xy, self.dim, self.g_ref_m)
        cell_img = layout.cell_img[cells]
        hw = layout.img_hw[cell_img].to(torch.float32)
        rc = layout.cell_rc[cells].to(torch.float32)
        return geo.sincos_2d(rc[:, 1] - (hw[:, 1] - 1) / 2, (hw[:, 0] - 1) / 2 - rc[:, 0], self.dim)

    def forward(self, layout: TokenLayout, tokens: torch.Tensor, drop: MetaDrop) -> torch.Tensor:
        """Sum of all additive embeddings of some tokens.

        Args:
            layout: Batch layout.
            tokens: ``[M]`` token indices.
            drop: Metadata dropped this step.

        Returns:
            ``[M, dim]``.
        """
        cells, inv = torch.unique(layout.tok_cell[tokens], return_inverse=True)
        pos = self.cell_pos(layout, cells, drop)[inv]
        img = take_rows(self.image_terms(layout, drop), layout.tok_img[tokens])
        slab = take_rows(self.slab_terms(layout), layout.tok_slab[tokens])
        return pos + img + slab
