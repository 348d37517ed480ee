"""Torch dataset over an STSSD snapshot (local folder or ``s3://`` prefix).

:class:`StssdDataset` is map-style: item ``i`` is the ``i``-th image set of the chosen split, as an
:class:`~a2mae.types.ImageSetSample` whose chips are ``[C, H, W]`` float32, normalised per
sensor and band with the snapshot's ``stats.json``, in the channel order of ``meta.bands``. Use
:func:`~a2mae.types.collate_sets` as the ``DataLoader`` collate function (sets of different
composition batch together).

Normalisation (SatMAE-style, the default): ``x = clip(r, mean - k*std, mean + k*std)`` then
``(x - mean) / std`` with ``k = clip_sigma`` (2), where ``r`` is reflectance (stored int16 / 10000).
``clip_sigma=None`` standardises without clipping (exactly invertible with :meth:`denormalise`).
Nodata pixels are 0 after normalisation and ``False`` in ``ImageSample.valid``.

Reads: a set's chips are stored next to each other, so a set costs one read per shard it touches
(memory-mapped locally; one byte-range request on S3 through s3fs). Filesystem handles are opened
lazily in each process, so the dataset can be pickled to ``DataLoader`` workers (fork or spawn).

Integrity: the manifest and the statistics are checked against the sha256 digests of
``snapshot.json`` when the dataset is made; each shard is checked the first time a process reads from
it: its size always, its sha256 too when ``verify`` is on (one full read of the shard per process).
A damaged file raises :class:`~a2mae.stssd.snapshot.SnapshotError` naming it.

Distributed training: ``dataset.shard(rank, world_size)`` gives each rank a disjoint, equally long
part of the sets (no set is read twice in an epoch); shuffle inside each part with the sampler.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch.utils.data import Dataset

from a2mae.normstats import NormStats, NormStatsError
from a2mae.stssd.chips import NODATA, REFLECTANCE_SCALE
from a2mae.stssd.snapshot import MANIFEST, REPAIR, STATS, SnapshotError, check_file, join_uri, read_info
from a2mae.types import ImageMeta, ImageSample, ImageSetSample

if TYPE_CHECKING:
    import pyarrow as pa
    from s3fs import S3FileSystem


SPLITS = ("train", "val", "test")
_COLUMNS = (
    "set_id",
    "set_index",
    "split",
    "image_id",
    "sensor",
    "product",
    "bands",
    "gsd_m",
    "datetime",
    "period",
    "corners",
    "shard",
    "offset",
    "nbytes",
    "channels",
    "height",
    "width",
)


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


class StssdDataset(Dataset[ImageSetSample]):
    """Image sets of an STSSD snapshot.

    Args:
        uri: Snapshot folder or ``s3://bucket/prefix``.
        split: ``train``, ``val``, ``test`` or None (all sets).
        normalise: Return normalised values (else reflectance).
        clip_sigma: Clip to ``mean ± clip_sigma * std`` before standardising (None: no clipping).
        sensors: Keep only images of these sensors (sets left empty are skipped).
        s3: S3 settings for ``s3://`` snapshots (default: from the environment).
        verify: Check each shard's sha256 the first time a process reads it (its size is always
            checked).

    Raises:
        SnapshotError: Not a snapshot, unknown split, statistics missing for a sensor/band, or a
            manifest or statistics file that differs from its digest in ``snapshot.json``.
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        split: str | None = "train",
        *,
        normalise: bool = True,
        clip_sigma: float | None = 2.0,
        sensors: Sequence[str] | None = None,
        s3: Any | None = None,
        verify: bool = True,
    ) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.uri = str(uri).rstrip("/")
        if split is not None and split not in SPLITS:
            raise SnapshotError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or None")
        self.split = split
        self.normalise = normalise
        self.clip_sigma = clip_sigma
        self._s3 = s3
        self._fs_pid: int | None = None
        self._fs_obj: S3FileSystem | None = None
        self._maps: dict[str, np.memmap] = {}
        self.verify = verify
        self._checked: tuple[int, set[str]] = (os.getpid(), set())
        fs = self._fs()
        self.info = read_info(self.uri, fs)
        self._shard_entries = {
            sh.get("path"): sh for sh in self.info.get("shards", []) if isinstance(sh, dict)
        }
        self.stats = _parse_json(self._read_small(STATS), join_uri(self.uri, STATS))
        try:
            self.norm_stats = NormStats.from_doc(self.stats, join_uri(self.uri, STATS))
        except NormStatsError as err:
            raise SnapshotError(str(err)) from None
        table = self._read_manifest(fs).select(list(_COLUMNS))
        if split is not None:
            table = table.filter(pc.equal(table["split"], pa.scalar(split)))
        if sensors is not None:
            table = table.filter(pc.is_in(table["sensor"], value_set=_pa_array(list(sensors))))
        self._table = table
        set_index = table["set_index"].to_numpy()
        # Rows are set-major; each set is a contiguous run of rows.
        starts = (
            np.flatnonzero(np.r_[True, set_index[1:] != set_index[:-1]]) if len(set_index) else np.array([])
        )
        ends = np.r_[starts[1:], len(set_index)] if len(set_index) else np.array([])
        self._runs = (
            np.stack([starts, ends], 1).astype(np.int64) if len(set_index) else np.zeros((0, 2), np.int64)
        )
        self._mean_std = self._norm_table()

    # ------------------------------------------------------------------------------------------- io
    def _fs(self) -> S3FileSystem | None:
        """The s3fs filesystem of this process (None for local snapshots)."""
        if not _is_s3(self.uri):
            return None
        if self._fs_obj is None or self._fs_pid != os.getpid():
            from a2mae.io import storage

            # one per process: a forked DataLoader worker gets its own (see s3_filesystem)
            self._fs_obj = storage.s3_filesystem(self._s3 or storage.S3Settings.from_env())
            self._fs_pid = os.getpid()
        return self._fs_obj

    def _read_small(self, name: str) -> bytes:
        """A whole file of the snapshot, checked against its sha256 in ``snapshot.json``."""
        uri = join_uri(self.uri, name)
        fs = self._fs()
        try:
            data = Path(uri).read_bytes() if fs is None else fs.cat_file(uri)
        except FileNotFoundError:
            raise SnapshotError(f"{uri}: missing; the snapshot is incomplete, re-run `a2mae tile`") from None
        digest = (self.info.get("files") or {}).get(name)
        if digest and hashlib.sha256(data).hexdigest() != digest:
            raise SnapshotError(
                f"{uri}: content differs from the sha256 in snapshot.json (damaged); {REPAIR}"
            )
        return data

    def _read_manifest(self, fs: S3FileSystem | None) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = self._read_small(MANIFEST)  # one GET on S3
        try:
            return pq.read_table(pa.BufferReader(data))
        except Exception as err:  # pyarrow raises several types for bytes that are not Parquet
            detail = " ".join(str(err).split())[:120]
            raise SnapshotError(
                f"{join_uri(self.uri, MANIFEST)}: not a manifest ({detail}); {REPAIR}"
            ) from None

    def _check_shard(self, shard: str) -> None:
        """Check a shard the first time this process reads it: size, and sha256 when ``verify``.

        Raises:
            SnapshotError: Not listed in ``snapshot.json``, missing, truncated or damaged.
        """
        pid, checked = self._checked
        if pid != os.getpid():  # a forked worker checks for itself
            checked = set()
            self._checked = (os.getpid(), checked)
        if shard in checked:
            return
        entry = self._shard_entries.get(shard)
        uri = join_uri(self.uri, shard)
        if entry is None:
            raise SnapshotError(f"{uri}: the manifest names a shard snapshot.json does not list; {REPAIR}")
        check_file(uri, entry.get("bytes"), entry.get("sha256") if self.verify else None, self._fs())
        checked.add(shard)

    def _read_range(self, shard: str, start: int, end: int) -> bytes | np.ndarray:
        self._check_shard(shard)
        if not _is_s3(self.uri):
            mm = self._maps.get(shard)
            if mm is None:
                mm = np.memmap(join_uri(self.uri, shard), dtype=np.uint8, mode="r")
                self._maps[shard] = mm
            return mm[start:end]
        fs = self._fs()
        assert fs is not None  # an s3:// snapshot
        data: bytes = fs.cat_file(join_uri(self.uri, shard), start=start, end=end)
        return data

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}
        state["_fs_obj"] = None
        state["_fs_pid"] = None
        state["_checked"] = (-1, set())
        return state

    # ------------------------------------------------------------------------------ normalisation
    def _norm_table(self) -> dict[tuple[str, str], tuple[float, float]]:
        out: dict[tuple[str, str], tuple[float, float]] = {}
        sensors = self.norm_stats.sensors
        # non-null columns (the manifest is written by `tile`)
        sensor_col = cast(list[str], self._table["sensor"].to_pylist())
        bands_col = cast(list[list[str]], self._table["bands"].to_pylist())
        for sensor, bands in zip(sensor_col, bands_col, strict=True):
            for b in bands:
                if (sensor, b) in out:
                    continue
                st = sensors.get(sensor, {}).get(b)
                if st is None:
                    raise SnapshotError(f"{self.uri}: stats.json has no statistics for {sensor} {b}; re-tile")
                out[(sensor, b)] = (st.mean, max(st.std, 1e-6))
        return out

    def _mean_std_of(self, sensor: str, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ms = np.array([self._mean_std[(sensor, b)] for b in bands], dtype=np.float64)
        return ms[:, 0][:, None, None], ms[:, 1][:, None, None]

    def normalise_array(self, stored: np.ndarray, sensor: str, bands: Sequence[str]) -> np.ndarray:
        """Stored int16 ``[C, H, W]`` -> float32 model input (see the module docstring)."""
        refl = stored.astype(np.float64) / REFLECTANCE_SCALE
        if not self.normalise:
            out = refl
        else:
            mean, std = self._mean_std_of(sensor, bands)
            if self.clip_sigma is not None:
                refl = np.clip(refl, mean - self.clip_sigma * std, mean + self.clip_sigma * std)
            out = (refl - mean) / std
        out[:, (stored == NODATA).any(0)] = 0.0
        return out.astype(np.float32)

    def denormalise(self, pixels: torch.Tensor, sensor: str, bands: Sequence[str]) -> torch.Tensor:
        """Model-space ``[..., C, H, W]`` -> reflectance (exact inverse when ``clip_sigma`` is None)."""
        if not self.normalise:
            return pixels
        mean, std = self._mean_std_of(sensor, bands)
        m = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device)
        s = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device)
        return pixels * s + m

    # ------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._runs)

    @property
    def set_ids(self) -> list[str]:
        """Set ids in dataset order."""
        col = self._table["set_id"]
        return [col[int(s)].as_py() for s, _ in self._runs]

    def read_stored(self, index: int) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """Manifest rows and stored int16 chips of set ``index`` (no normalisation)."""
        start, end = (int(v) for v in self._runs[index])
        rows = self._table.slice(start, end - start).to_pylist()
        chips: list[np.ndarray | None] = [None] * len(rows)
        by_shard: dict[str, list[int]] = {}
        for k, r in enumerate(rows):
            by_shard.setdefault(r["shard"], []).append(k)
        for shard, ks in by_shard.items():
            lo = min(rows[k]["offset"] for k in ks)
            hi = max(rows[k]["offset"] + rows[k]["nbytes"] for k in ks)
            need = sum(rows[k]["nbytes"] for k in ks)
            if hi - lo <= 2 * need:  # one read for the run (the usual, set-major case)
                buf = self._read_range(shard, lo, hi)
                parts = {
                    k: buf[rows[k]["offset"] - lo : rows[k]["offset"] - lo + rows[k]["nbytes"]] for k in ks
                }
            else:
                parts = {
                    k: self._read_range(shard, rows[k]["offset"], rows[k]["offset"] + rows[k]["nbytes"])
                    for k in ks
                }
            for k in ks:
                r = rows[k]
                chips[k] = np.frombuffer(parts[k], dtype="<i2").reshape(
                    r["channels"], r["height"], r["width"]
                )
        return rows, chips  # type: ignore[return-value]

    def __getitem__(self, index: int) -> ImageSetSample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"set index {index} out of range (0..{len(self) - 1})")
        rows, chips = self.read_stored(index)
        images = []
        for r, stored in zip(rows, chips, strict=True):
            bands = tuple(r["bands"])
            c = r["corners"]
            meta = ImageMeta(
                sensor=r["sensor"],
                bands=bands,
                gsd_m=float(r["gsd_m"]),
                corners=tuple((c[2 * i], c[2 * i + 1]) for i in range(4)),
                datetime=r["datetime"],
                period=r["period"],
                image_id=r["image_id"],
                product=r["product"],
            )
            pixels = torch.from_numpy(self.normalise_array(stored, r["sensor"], bands))
            valid = torch.from_numpy(~(stored == NODATA).any(0))
            images.append(ImageSample(pixels=pixels, meta=meta, valid=valid))
        return ImageSetSample(set_id=rows[0]["set_id"], images=images, split=rows[0]["split"])

    def shard(self, rank: int, world_size: int, *, drop_remainder: bool = True) -> StssdDataset:
        """This rank's part of the sets: every ``world_size``-th set from ``rank``.

        Args:
            rank: This worker's rank, ``0 <= rank < world_size``.
            world_size: Number of workers.
            drop_remainder: Make every part equally long (drops at most ``world_size - 1`` sets), so
                distributed steps stay in lockstep.

        Returns:
            A dataset over the part (shares the manifest, no I/O).
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        n = len(self)
        if drop_remainder:
            n -= n % world_size
        part = object.__new__(StssdDataset)
        part.__dict__.update(self.__getstate__())
        part._runs = self._runs[:n][rank::world_size]
        return part


def _parse_json(data: bytes, uri: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SnapshotError(f"{uri}: not valid JSON; {REPAIR}") from None
    if not isinstance(doc, dict):
        raise SnapshotError(f"{uri}: not a statistics file; {REPAIR}")
    return doc


def _pa_array(values: list[str]) -> pa.StringArray:
    import pyarrow as pa

    return pa.array(values, pa.string())
