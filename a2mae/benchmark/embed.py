"""Embeddings computed once per arm and cached on disk, keyed by the arm, the data's hash and the chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from a2mae.benchmark.arms.base import Arm, Embeddings
from a2mae.benchmark.data import BenchData, chip_hash
from a2mae.console import progress
from a2mae.io.atomic import atomic_path


def cache_path(cache: Path, arm: Arm, data: BenchData) -> Path:
    """``<cache>/<arm key>-<data hash>.npz``."""
    return cache / f"{arm.key()}-{data.data_hash()}.npz"


def _load(path: Path, hashes: np.ndarray, dense: bool) -> Embeddings | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not np.array_equal(z["chips"], hashes) or (dense and "tokens" not in z.files):
                return None
            return Embeddings(z["pooled"], z["tokens"] if dense else None)
    except (OSError, ValueError, KeyError):  # a damaged cache entry is recomputed
        return None


def compute(arm: Arm, data: BenchData, batch_size: int, *, show: bool = True) -> Embeddings:
    """Embed every image of every chip with ``arm`` (normalisation set by ``arm.prepare``).

    Returns:
        ``pooled [N, T, D]`` and (dense tasks) ``tokens [N, T, D, h, w]``.
    """
    t = data.chips[0].pixels.shape[0]
    flat = [(ci, ti) for ci in range(len(data.chips)) for ti in range(t)]
    pooled: list[np.ndarray] = []
    tokens: list[np.ndarray] = []
    with progress(f"embed {arm.name}", len(flat), "images", enabled=show) as bar:
        for s in range(0, len(flat), batch_size):
            part = flat[s : s + batch_size]
            px = np.stack([data.chips[ci].pixels[ti] for ci, ti in part])
            metas = [data.chips[ci].metas[ti] for ci, ti in part]
            with torch.inference_mode():
                p, m = arm.forward(arm.normalise(px), metas)
            pooled.append(p.float().numpy())
            if data.dense:
                tokens.append(m.float().numpy())
            bar.advance(len(part))
    pool = np.concatenate(pooled).reshape(len(data.chips), t, -1)
    tok = None
    if data.dense:
        cat = np.concatenate(tokens)
        tok = cat.reshape(len(data.chips), t, *cat.shape[1:])
    return Embeddings(pool, tok)


def embeddings(
    arm: Arm, data: BenchData, cache: Path | None, batch_size: int, *, show: bool = True
) -> tuple[Embeddings, bool]:
    """Cached embeddings of ``data`` by ``arm`` (computed and stored when missing).

    Returns:
        The embeddings and whether they came from the cache.
    """
    hashes = np.array([chip_hash(c) for c in data.chips])
    path = cache_path(cache, arm, data) if cache is not None else None
    if path is not None and path.is_file():
        got = _load(path, hashes, data.dense)
        if got is not None:
            return got, True
    emb = compute(arm, data, batch_size, show=show)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"pooled": emb.pooled, "chips": hashes}
        if emb.tokens is not None:
            arrays["tokens"] = emb.tokens
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
    return emb, False
