"""The STSSD snapshot on disk (or S3): layout, deterministic writer, and reader.

Layout (``docs/stssd.md`` has the full column list)::

    SNAPSHOT/
      snapshot.json        format, version, snapshot id, fingerprint of inputs + params, counts, shard hashes
      manifest.parquet     one row per image of every set (set-major, in snapshot order)
      stats.json           per sensor and band: count, mean, std, min, max (reflectance, train split)
      shards/shard-00000.bin  chips as int16 [C, H, W] (C order, little-endian), concatenated

Chips of a set are written next to each other (a reader fetches a whole set with one range read),
a chip shared by two sets of the same place is stored once, and a shard holds the sets of
consecutive grid points whose chips add up to at most ``shard_max_mb``. Each shard is written by one
worker (:mod:`a2mae.stssd.packing`); :class:`SnapshotWriter` receives the results in plan order and
writes the manifest and statistics as it goes (bounded memory); statistics are sums of exact
integers. So the same inputs and parameters give the same bytes whatever the worker count or
completion order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from a2mae.normstats import BandStats, NormStats
from a2mae.stssd.chips import NODATA, REFLECTANCE_SCALE
from a2mae.stssd.errors import SnapshotError as SnapshotError  # re-exported
from a2mae.stssd.grouping import Plan, PlannedImage, PlannedSet, chip_transform, transformer
from a2mae.stssd.packing import KeptImage, ShardResult

if TYPE_CHECKING:
    import pyarrow as pa
    from s3fs import S3FileSystem

FORMAT = "a2mae-stssd"
FORMAT_VERSION = 2
MANIFEST = "manifest.parquet"
STATS = "stats.json"
INFO = "snapshot.json"
SHARD_DIR = "shards"


# ------------------------------------------------------------------------------------------- writer
@dataclass
class _BandAcc:
    count: int = 0
    total: int = 0
    squares: int = 0
    lo: int = 32767
    hi: int = -32767

    def add(self, n: int, s: int, ss: int, lo: int, hi: int) -> None:
        if n == 0:
            return
        self.count += n
        self.total += s
        self.squares += ss
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)

    def summary(self) -> dict[str, float | int]:
        n = self.count
        mean = self.total / n
        var = max(0, n * self.squares - self.total * self.total) / (n * n)  # exact ints, one division
        return {
            "count": n,
            "mean": round(mean / REFLECTANCE_SCALE, 8),
            "std": round(math.sqrt(var) / REFLECTANCE_SCALE, 8),
            "min": self.lo / REFLECTANCE_SCALE,
            "max": self.hi / REFLECTANCE_SCALE,
        }


@dataclass
class SnapshotCounts:
    """What a tiling run produced (deterministic; stored in ``snapshot.json``)."""

    sets_planned: int = 0
    sets: int = 0
    images: int = 0
    chips: int = 0
    chips_read: int = 0
    shards: int = 0
    bytes: int = 0
    chips_dropped: dict[str, int] = field(default_factory=dict)
    sets_dropped: dict[str, int] = field(default_factory=dict)
    images_per_sensor: dict[str, int] = field(default_factory=dict)
    sets_per_kind: dict[str, int] = field(default_factory=dict)
    sets_per_split: dict[str, int] = field(default_factory=dict)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_schema() -> pa.Schema:
    import pyarrow as pa

    fields: list[tuple[str, pa.DataType]] = [
        ("set_id", pa.string()),
        ("set_index", pa.int64()),
        ("set_kind", pa.string()),
        ("split", pa.string()),
        ("image_index", pa.int16()),
        ("role", pa.string()),
        ("image_id", pa.string()),
        ("scene_id", pa.string()),
        ("source", pa.string()),
        ("sensor", pa.string()),
        ("product", pa.string()),
        ("bands", pa.list_(pa.string())),
        ("gsd_m", pa.float64()),
        ("datetime", pa.timestamp("us", tz="UTC")),
        ("year", pa.int16()),
        ("doy", pa.int16()),
        ("period", pa.string()),
        ("corners", pa.list_(pa.float64(), 8)),
        ("crs", pa.string()),
        ("transform", pa.list_(pa.float64(), 6)),
        ("row0", pa.int32()),
        ("col0", pa.int32()),
        ("channels", pa.int16()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("centre_lat", pa.float64()),
        ("centre_lon", pa.float64()),
        ("grid_crs", pa.string()),
        ("centre_x", pa.float64()),
        ("centre_y", pa.float64()),
        ("cloud_fraction", pa.float32()),
        ("nodata_fraction", pa.float32()),
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("nbytes", pa.int64()),
        ("dtype", pa.string()),
    ]
    return pa.schema(
        fields,
        metadata={b"a2mae_format": FORMAT.encode(), b"a2mae_format_version": str(FORMAT_VERSION).encode()},
    )


def _fill_corners(rows: list[dict[str, Any]], chip: int) -> None:
    """Set ``corners`` (WGS84 UL, UR, LR, LL; lat, lon) from ``crs`` and ``transform``, per CRS at once."""
    by_crs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_crs[r["crs"]].append(r)
    px = np.array([0, chip, chip, 0], float)  # UL, UR, LR, LL columns
    py = np.array([0, 0, chip, chip], float)  # and rows
    for crs, group in by_crs.items():
        t = np.array([r["transform"] for r in group])  # [N, 6]
        xs = t[:, 0:1] * px + t[:, 1:2] * py + t[:, 2:3]
        ys = t[:, 3:4] * px + t[:, 4:5] * py + t[:, 5:6]
        lons, lats = transformer(crs, "EPSG:4326").transform(xs.ravel(), ys.ravel())
        ll = np.stack([np.asarray(lats), np.asarray(lons)], 1).reshape(len(group), 8)
        for r, c in zip(group, ll.tolist(), strict=True):
            r["corners"] = c


class SnapshotWriter:
    """Assembles a snapshot from the shard tasks' results, which arrive in plan order.

    The workers write the chips (:func:`a2mae.stssd.packing.write_shard`); this class renames their
    part files into the shard sequence, writes the manifest rows (bounded memory), merges the exact
    statistics sums and the counts, and finally writes ``stats.json`` and ``snapshot.json``.

    Args:
        root: The (temporary) snapshot folder; must exist.
        plan: The plan.
        bands: Band ids written per scene index.
        chip: Chip side, pixels.
        info: Extra entries for ``snapshot.json`` (fingerprint, params, catalog hash).
    """

    ROW_GROUP = 65536

    def __init__(
        self,
        root: Path,
        plan: Plan,
        bands: dict[int, tuple[str, ...]],
        *,
        chip: int,
        info: dict[str, Any],
    ) -> None:
        import pyarrow.parquet as pq

        self.root, self.plan, self.bands, self.chip = root, plan, bands, chip
        self.info = info
        self.counts = SnapshotCounts(sets_planned=len(plan.sets))
        self.shards: list[dict[str, Any]] = []
        (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self._accs: dict[str, dict[str, dict[str, _BandAcc]]] = {"train": {}, "all": {}}
        self._rows: list[dict[str, Any]] = []
        self._nrows = 0
        self._chips_dropped: Counter[str] = Counter()
        self._sets_dropped: Counter[str] = Counter()
        self._per_sensor: Counter[str] = Counter()
        self._per_kind: Counter[str] = Counter()
        self._per_split: Counter[str] = Counter()
        self._set_index = 0
        self._manifest = pq.ParquetWriter(
            root / MANIFEST, _manifest_schema(), compression="zstd", write_statistics=True
        )

    @property
    def shard_dir(self) -> Path:
        """Where workers write their part files."""
        return self.root / SHARD_DIR

    def add(self, sets: Sequence[PlannedSet], result: ShardResult) -> None:
        """Add one task's result (tasks in plan order).

        Args:
            sets: The task's planned sets.
            result: What the task wrote.
        """
        names = []
        for part in result.parts:
            name = f"{SHARD_DIR}/shard-{len(self.shards):05d}.bin"
            if part.path is not None:
                os.replace(part.path, self.root / name)
            else:
                assert part.data is not None
                (self.root / name).write_bytes(part.data)
            self.shards.append({"path": name, "bytes": part.nbytes, "sha256": part.sha256})
            names.append(name)
        c = self.counts
        c.chips_read += result.chips_read
        c.chips += result.chips_written
        self._chips_dropped.update(result.chips_dropped)
        self._sets_dropped.update(result.sets_dropped)
        for name, by_sensor in result.sums.items():
            for sensor, by_band in by_sensor.items():
                acc = self._accs[name].setdefault(sensor, {})
                for band, st in by_band.items():
                    acc.setdefault(band, _BandAcc()).add(*st)
        recs = self.plan.records
        first_row = len(self._rows)
        for si, images in result.kept:
            s = sets[si]
            for k, ki in enumerate(images):
                im = s.images[ki.image]
                self._rows.append(self._row(s, k, im, ki, names[ki.part]))
                self._per_sensor[recs[im.window.scene].sensor] += 1
            self._per_kind[s.kind] += 1
            self._per_split[s.split] += 1
            self._set_index += 1
        _fill_corners(self._rows[first_row:], self.chip)
        if len(self._rows) >= self.ROW_GROUP:
            self._flush()

    def _row(self, s: PlannedSet, k: int, im: PlannedImage, ki: KeptImage, shard: str) -> dict[str, Any]:
        w = im.window
        rec = self.plan.records[w.scene]
        tr = chip_transform(rec, w)
        dt = rec.datetime.astimezone(UTC) if rec.datetime is not None else None
        b = self.bands[w.scene]
        return {
            "set_id": s.set_id,
            "set_index": self._set_index,
            "set_kind": s.kind,
            "split": s.split,
            "image_index": k,
            "role": im.role,
            "image_id": f"{rec.scene_id}@r{w.row0}c{w.col0}",
            "scene_id": rec.scene_id,
            "source": rec.source,
            "sensor": rec.sensor,
            "product": rec.product,
            "bands": list(b),
            "gsd_m": float(rec.gsd_m),
            "datetime": dt,
            "year": dt.year if dt else None,
            "doy": dt.timetuple().tm_yday if dt else None,
            "period": rec.period,
            "corners": None,  # filled per task, batched (see _fill_corners)
            "crs": rec.crs,
            "transform": [float(v) for v in tr],
            "row0": w.row0,
            "col0": w.col0,
            "channels": len(b),
            "height": self.chip,
            "width": self.chip,
            "centre_lat": s.centre_latlon[0],
            "centre_lon": s.centre_latlon[1],
            "grid_crs": s.point.crs,
            "centre_x": s.centre_xy[0],
            "centre_y": s.centre_xy[1],
            "cloud_fraction": ki.cloud_fraction,
            "nodata_fraction": ki.nodata_fraction,
            "shard": shard,
            "offset": ki.offset,
            "nbytes": ki.nbytes,
            "dtype": "int16",
        }

    def _flush(self) -> None:
        import pyarrow as pa

        while self._rows:
            batch, self._rows = self._rows[: self.ROW_GROUP], self._rows[self.ROW_GROUP :]
            self._manifest.write_table(pa.Table.from_pylist(batch, schema=_manifest_schema()))
            self._nrows += len(batch)

    def close(self) -> SnapshotCounts:
        """Finish the manifest; write ``stats.json`` and ``snapshot.json``.

        The snapshot id hashes the inputs' fingerprint, the manifest, the statistics and the shard
        sizes (chip bytes are a function of the fingerprint; DVC checksums every file it versions).

        Returns:
            The counts (also stored in ``snapshot.json``).
        """
        if self._rows or self._nrows == 0:
            import pyarrow as pa

            if not self._rows:
                self._manifest.write_table(pa.Table.from_pylist([], schema=_manifest_schema()))
            self._flush()
        self._manifest.close()
        root, c, shards = self.root, self.counts, self.shards
        (root / STATS).write_text(json.dumps(_stats_doc(self._accs), indent=1, sort_keys=True) + "\n")
        c.sets = self._set_index
        c.images = self._nrows
        c.shards = len(shards)
        c.bytes = sum(sh["bytes"] for sh in shards)
        c.chips_dropped = dict(sorted(self._chips_dropped.items()))
        c.sets_dropped = dict(sorted(self._sets_dropped.items()))
        c.images_per_sensor = dict(sorted(self._per_sensor.items()))
        c.sets_per_kind = dict(sorted(self._per_kind.items()))
        c.sets_per_split = {k: self._per_split.get(k, 0) for k in ("train", "val", "test")}
        files = {MANIFEST: _sha256_file(root / MANIFEST), STATS: _sha256_file(root / STATS)}
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "snapshot_id": snapshot_id_of(self.info.get("fingerprint"), files, shards),
            **self.info,
            "counts": c.__dict__,
            "files": files,
            "shards": shards,
            "chip": {
                "size": self.chip,
                "dtype": "int16",
                "order": "C,H,W",
                "scale": REFLECTANCE_SCALE,
                "nodata": NODATA,
            },
        }
        (root / INFO).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return c

    def abort(self) -> None:
        """Close open files after a failure (the caller removes the folder)."""
        self._manifest.close()


def snapshot_id_of(fingerprint: str | None, files: dict[str, str], shards: Sequence[dict[str, Any]]) -> str:
    """The snapshot id: a hash of the inputs' fingerprint, the file digests and the shard sizes.

    Shard digests are left out, so the id of a given output is the same as before they were recorded.
    """
    sizes = [{"path": sh["path"], "bytes": sh["bytes"]} for sh in shards]
    blob = json.dumps({"fingerprint": fingerprint, "files": files, "shards": sizes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stats_doc(accs: dict[str, dict[str, dict[str, _BandAcc]]]) -> dict[str, Any]:
    sensors: dict[str, dict[str, BandStats]] = {}
    for sensor in sorted(accs["all"]):
        out: dict[str, BandStats] = {}
        for band in sorted(accs["all"][sensor]):
            acc = accs["train"].get(sensor, {}).get(band)
            source = "train"
            if acc is None or acc.count == 0:
                acc, source = accs["all"][sensor][band], "all"
            if acc.count == 0:
                continue
            summary = acc.summary()
            mean, std = float(summary.pop("mean")), float(summary.pop("std"))
            out[band] = BandStats(mean, std, {**summary, "computed_on": source})
        sensors[sensor] = out
    stored = {"dtype": "int16", "scale": REFLECTANCE_SCALE, "nodata": NODATA}
    return NormStats(sensors, units="reflectance", stored=stored).to_doc()


# ------------------------------------------------------------------------------------------- reader
def join_uri(root: str, name: str) -> str:
    """``root`` + ``/`` + ``name`` for local paths and URIs."""
    return root.rstrip("/") + "/" + name


def read_info(root: str | os.PathLike[str], fs: S3FileSystem | None = None) -> dict[str, Any]:
    """Read and check ``snapshot.json``.

    Raises:
        SnapshotError: Missing, not JSON, or not an a2mae snapshot.
    """
    uri = join_uri(str(root), INFO)
    try:
        # on S3 one GET (fs.open would send a HEAD and a listing first)
        text = Path(uri).read_text() if fs is None else fs.cat_file(uri).decode()
    except (FileNotFoundError, NotADirectoryError):
        raise SnapshotError(f"{root}: not a snapshot (no {INFO}); run `a2mae tile` to build one") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise SnapshotError(f"{uri}: not valid JSON; rebuild the snapshot with `a2mae tile`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError(f"{uri}: not an {FORMAT} snapshot")
    if doc.get("version") != FORMAT_VERSION:
        raise SnapshotError(
            f"{uri}: snapshot format version {doc.get('version')} "
            f"(this a2mae reads {FORMAT_VERSION}); re-tile"
        )
    return doc


def is_complete(root: Path, doc: dict[str, Any]) -> bool:
    """Whether every file a local snapshot lists exists with its recorded size (no content check)."""
    for sh in doc.get("shards", []):
        p = root / sh["path"]
        if not p.is_file() or p.stat().st_size != sh["bytes"]:
            return False
    return all((root / name).is_file() for name in doc.get("files", {}))


@dataclass(frozen=True)
class SetMix:
    """How many of a snapshot's sets hold more than one image, and of what kind."""

    sets: int
    multi_image: int  # 2+ images
    multi_date: int  # 2+ distinct acquisition dates
    multi_sensor: int  # 2+ sensors
    multi_image_train: int  # multi-image sets in the train split


def set_mix(root: str | Path) -> SetMix:
    """Count a local snapshot's multi-image sets from its manifest (no chip is read).

    Raises:
        SnapshotError: No readable manifest under ``root``.
    """
    import pyarrow.parquet as pq

    path = Path(root) / MANIFEST
    try:
        rows = pq.read_table(path, columns=["set_id", "split", "sensor", "datetime"]).to_pylist()
    except (OSError, ValueError) as err:
        raise SnapshotError(
            f"{path}: cannot read the snapshot manifest ({err}); tile the snapshot again"
        ) from None
    by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_set[r["set_id"]].append(r)
    multi = [m for m in by_set.values() if len(m) > 1]
    return SetMix(
        sets=len(by_set),
        multi_image=len(multi),
        multi_date=sum(len({r["datetime"].date() for r in m if r["datetime"]}) > 1 for m in multi),
        multi_sensor=sum(len({r["sensor"] for r in m}) > 1 for m in multi),
        multi_image_train=sum(m[0]["split"] == "train" for m in multi),
    )


#: What to do about a damaged snapshot file (the end of every verification error).
REPAIR = "rebuild it with `a2mae tile --force`, or restore it (`dvc checkout` / `dvc pull`)"


def sha256_of(uri: str, fs: S3FileSystem | None = None) -> str:
    """sha256 of a local file or an S3 object (streamed)."""
    h = hashlib.sha256()
    with open(uri, "rb") if fs is None else fs.open(uri, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _size_of(uri: str, fs: S3FileSystem | None = None) -> int | None:
    try:
        return os.path.getsize(uri) if fs is None else int(fs.size(uri))
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_file(uri: str, size: int | None, digest: str | None, fs: S3FileSystem | None = None) -> None:
    """Check one snapshot file against its recorded size and sha256 (each when given).

    Raises:
        SnapshotError: Missing, of another size, or another content; the message names the file.
    """
    actual = _size_of(uri, fs)
    if actual is None:
        raise SnapshotError(f"{uri}: missing from the snapshot; {REPAIR}")
    if size is not None and actual != size:
        raise SnapshotError(
            f"{uri}: {actual} bytes, but snapshot.json records {size} (truncated or replaced); {REPAIR}"
        )
    if digest and sha256_of(uri, fs) != digest:
        raise SnapshotError(f"{uri}: content differs from the sha256 in snapshot.json (damaged); {REPAIR}")


def _valid_lists(files: Any, shards: Any) -> bool:
    """Whether ``files`` and ``shards`` of ``snapshot.json`` name only the snapshot's own files."""
    if not isinstance(files, dict) or not set(files) <= {MANIFEST, STATS} or not isinstance(shards, list):
        return False
    for sh in shards:
        path = sh.get("path") if isinstance(sh, dict) else None
        if not isinstance(path, str) or not isinstance(sh.get("bytes"), int):
            return False
        parts = path.split("/")
        if len(parts) != 2 or parts[0] != SHARD_DIR or parts[1] in ("", ".", ".."):
            return False
    return True


def verify_snapshot(
    root: str | os.PathLike[str], fs: S3FileSystem | None = None, doc: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check a snapshot against its own ``snapshot.json``: ids, sizes and sha256 of every file.

    Reads every byte of the snapshot once (about a second per GB locally).

    Args:
        root: Snapshot folder or ``s3://`` prefix.
        fs: s3fs filesystem for ``s3://`` snapshots.
        doc: ``snapshot.json`` already read (default: read it).

    Returns:
        ``snapshot.json``, and ``doc["verified"]``: ``"sha256"`` when every shard had a recorded
        digest, ``"size"`` for a snapshot written before shard digests were recorded.

    Raises:
        SnapshotError: The first file that is missing, of another size or of another content, or a
            ``snapshot.json`` whose ``snapshot_id`` does not match what it lists; the message names it.
    """
    root = str(root).rstrip("/")
    doc = dict(doc if doc is not None else read_info(root, fs))
    files: Any = doc.get("files")  # checked by _valid_lists
    shards: Any = doc.get("shards")
    if not _valid_lists(files, shards):
        raise SnapshotError(f"{join_uri(root, INFO)}: no valid file list (files, shards); {REPAIR}")
    if snapshot_id_of(doc.get("fingerprint"), files, shards) != doc.get("snapshot_id"):
        raise SnapshotError(
            f"{join_uri(root, INFO)}: its snapshot_id does not match the files it lists (edited); {REPAIR}"
        )
    for name, digest in sorted(files.items()):
        check_file(join_uri(root, name), None, digest, fs)
    for sh in shards:
        check_file(join_uri(root, sh["path"]), sh["bytes"], sh.get("sha256"), fs)
    doc["verified"] = "sha256" if all(sh.get("sha256") for sh in shards) else "size"
    return doc
