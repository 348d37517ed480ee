"""Worker side of tiling: one task writes one shard of the snapshot.

A :class:`ShardTask` holds the planned sets of whole blocks of grid points whose chips add up to at
most ``tile.shard_max_mb`` (:func:`a2mae.stssd.grouping.pack_runs`; the partition depends only on the
plan and that bound, so the output does not depend on how many workers run it). :func:`write_shard`
reads the chips in batches of at most ``tile.chips_per_task`` chips (whole blocks again; bounded
memory), applies the drop rules, and appends the surviving
chips to the shard file in set order; it returns only metadata (:class:`ShardResult`): which images
were kept, where their chips are, drop counts and exact per-band sums. The main process never
touches chip bytes (local executor); a Ray task, which may run on another machine, returns the bytes
instead and the driver writes them.

Rules (the same at any worker count):

* a chip is dropped when its nodata fraction exceeds ``max_nodata`` or its cloud fraction
  ``max_cloud``; a set is dropped when fewer than ``min_images`` (and at least one) of its chips
  survive, and a ``hires`` set when its high-resolution chip is dropped;
* a chip shared by several sets of one grid point is stored once, next to the first set using it;
* a shard is normally the whole task; should a single grid point exceed the bound, a new shard
  file starts before a set would push the current one past it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from a2mae.stssd.chips import ChipData, ReadTask, SceneSource, band_stats, read_chips
from a2mae.stssd.grouping import HIRES, PlannedSet, pack_runs, set_kind

#: Per band ``(count, sum, sum of squares, min, max)``: exact integers.
BandSums = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class ShardTask:
    """The sets of one shard and how to read and judge their chips.

    Attributes:
        unit: Position of the task in the plan (names its part files).
        chip: Chip side, pixels.
        scenes: Scenes the sets use; ``scene_index[k]`` is the plan index of ``scenes[k]``.
        scene_index: Plan index of each of ``scenes``.
        sensors: Sensor of each of ``scenes`` (statistics keys, the hires rule).
        sets: The planned sets, in plan order; grid points (and blocks, where they fit) are whole.
        max_nodata: Drop chips with a larger nodata fraction.
        max_cloud: Drop chips with a larger cloud fraction.
        min_images: Drop sets with fewer surviving chips.
        hires_sensors: Sensors whose chip a ``hires`` set cannot lose.
        max_bytes: Shard size bound.
        batch_chips: Chips read and held at once (memory bound).
        gdal_cache_mb: GDAL block cache while reading, MB (None: GDAL's default).
        out_dir: Folder to write the part files to; None returns the bytes in the result (Ray).
        s3: S3 settings for ``s3://`` scenes.
        worker_process: The task runs in a worker process (pool or Ray), not in the caller's
            process: the allocator may be tuned for it (:func:`_tune_allocator`).
    """

    unit: int
    chip: int
    scenes: tuple[SceneSource, ...]
    scene_index: tuple[int, ...]
    sensors: tuple[str, ...]
    sets: tuple[PlannedSet, ...]
    max_nodata: float
    max_cloud: float
    min_images: int
    hires_sensors: frozenset[str]
    max_bytes: int
    batch_chips: int
    gdal_cache_mb: int | None = None
    out_dir: str | None = None
    s3: object | None = None
    worker_process: bool = False


@dataclass(frozen=True)
class KeptImage:
    """A written image of a kept set.

    Attributes:
        image: Position in the planned set's ``images``.
        part: Which of the task's part files holds the chip.
        offset: Byte offset of the chip in that part.
        nbytes: Chip size, bytes.
        nodata_fraction: Fraction of nodata pixels.
        cloud_fraction: Fraction of cloud pixels.
    """

    image: int
    part: int
    offset: int
    nbytes: int
    nodata_fraction: float
    cloud_fraction: float


@dataclass
class Part:
    """One shard file written by a task.

    Attributes:
        path: Where the worker wrote it (None: ``data`` holds the bytes).
        nbytes: Size, bytes.
        data: The bytes, when the task had no ``out_dir``.
        sha256: Hex digest of the bytes, computed as they were written (``snapshot.json`` keeps it,
            so readers can check the shard).
    """

    path: str | None
    nbytes: int
    data: bytes | None = None
    sha256: str = ""


@dataclass
class ShardResult:
    """What a task wrote (metadata only, unless the bytes had to travel back).

    Attributes:
        parts: Shard files, in order (none when every set was dropped).
        kept: ``(position of the set in the task's sets, kept images)`` in order.
        chips_read: Distinct chips read.
        chips_written: Distinct chips written.
        chips_dropped: Dropped chips by reason.
        sets_dropped: Dropped sets by reason.
        sums: ``{"all" | "train": {sensor: {band: BandSums}}}`` over the written chips.
    """

    parts: list[Part] = field(default_factory=list)
    kept: list[tuple[int, list[KeptImage]]] = field(default_factory=list)
    chips_read: int = 0
    chips_written: int = 0
    chips_dropped: Counter[str] = field(default_factory=Counter)
    sets_dropped: Counter[str] = field(default_factory=Counter)
    sums: dict[str, dict[str, dict[str, BandSums]]] = field(default_factory=lambda: {"all": {}, "train": {}})


class _Sums:
    """Per-band sums of the chips a task writes, by category (``all``/``train``), sensor and band list.

    int64 arrays while the task runs (a task's sums fit easily), Python ints in the result.
    """

    def __init__(self) -> None:
        self._acc: dict[tuple[str, str, tuple[str, ...]], list[np.ndarray]] = {}

    def add(
        self,
        names: Sequence[str],
        sensor: str,
        bands: tuple[str, ...],
        stats: tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> None:
        """Add one chip's :func:`~a2mae.stssd.chips.band_stats` (None: no valid pixel) to ``names``."""
        if stats is None:
            return
        n, s, ss, lo, hi = stats
        for name in names:
            acc = self._acc.get((name, sensor, bands))
            if acc is None:
                count = np.full(len(bands), n, np.int64)
                self._acc[(name, sensor, bands)] = [count, s.copy(), ss.copy(), lo, hi]
            else:
                acc[0] += n
                acc[1] += s
                acc[2] += ss
                acc[3] = np.minimum(acc[3], lo)
                acc[4] = np.maximum(acc[4], hi)

    def result(self) -> dict[str, dict[str, dict[str, BandSums]]]:
        """``{"all" | "train": {sensor: {band: (count, sum, sum of squares, min, max)}}}``."""
        out: dict[str, dict[str, dict[str, BandSums]]] = {"all": {}, "train": {}}
        for (name, sensor, bands), arrays in sorted(self._acc.items()):
            per = out[name].setdefault(sensor, {})
            for k, band in enumerate(bands):
                n, s, ss, lo, hi = (int(a[k]) for a in arrays)
                old = per.get(band)
                per[band] = (
                    (n, s, ss, lo, hi)
                    if old is None
                    else (old[0] + n, old[1] + s, old[2] + ss, min(old[3], lo), max(old[4], hi))
                )
        return out


class _PartWriter:
    """Appends chips to the task's part files (or to memory), starting a new one at the bound."""

    def __init__(self, task: ShardTask) -> None:
        self.task = task
        self.parts: list[Part] = []
        self._fd: int | None = None
        self._buf: bytearray | None = None
        self._size = 0
        self._hash = hashlib.sha256()

    def reserve(self, nbytes: int) -> None:
        """Start a new part if ``nbytes`` more would overflow the current one."""
        if not self.parts or (self._size > 0 and self._size + nbytes > self.task.max_bytes):
            self._finish()
            k = len(self.parts)
            if self.task.out_dir is None:
                self._buf = bytearray()
                self.parts.append(Part(None, 0))
            else:
                path = os.path.join(self.task.out_dir, f"part-{self.task.unit:06d}-{k:03d}.bin")
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self.parts.append(Part(path, 0))
            self._size = 0
            self._hash = hashlib.sha256()

    def write(self, chip: np.ndarray) -> tuple[int, int]:
        """Append a C-contiguous ``[C, H, W]`` int16 chip; returns ``(part, offset)``."""
        data = chip.data.cast("B")
        off = self._size
        self._hash.update(data)
        if self._buf is not None:
            self._buf += data
        else:
            assert self._fd is not None
            view = data
            while view:
                view = view[os.write(self._fd, view) :]
        self._size += len(data)
        return len(self.parts) - 1, off

    def _finish(self) -> None:
        if not self.parts:
            return
        last = self.parts[-1]
        last.nbytes = self._size
        last.sha256 = self._hash.hexdigest()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._buf is not None:
            last.data = bytes(self._buf)
            self._buf = None

    def close(self) -> list[Part]:
        """Finish the open part; returns all parts."""
        self._finish()
        return self.parts


Key = tuple[int, int, int]  # (position in task.scenes, row0, col0)


def _set_keys(task: ShardTask) -> list[list[Key]]:
    """The chip keys of each of the task's sets, in image order."""
    pos = {scene: k for k, scene in enumerate(task.scene_index)}
    return [[(pos[im.window.scene], im.window.row0, im.window.col0) for im in s.images] for s in task.sets]


def _batches(task: ShardTask, keys: list[list[Key]]) -> Iterator[tuple[int, int, list[Key]]]:
    """Runs of whole blocks (or grid points) of at most ``batch_chips`` distinct chips.

    Args:
        task: The task.
        keys: :func:`_set_keys` of the task.

    Yields:
        ``(first set, end set, distinct chip keys)``; a point is never split (its sets share chips).
    """
    index = {id(s): i for i, s in enumerate(task.sets)}

    def chips(point_sets: Sequence[PlannedSet]) -> int:
        return len({k for s in point_sets for k in keys[index[id(s)]]})

    for a, b in pack_runs(task.sets, chips, task.batch_chips):
        yield a, b, list(dict.fromkeys(k for i in range(a, b) for k in keys[i]))


def _drop_reason(cd: ChipData, task: ShardTask) -> str | None:
    if cd.nodata_fraction > task.max_nodata:
        return "nodata"
    if cd.cloud_fraction > task.max_cloud:
        return "cloud"
    return None


def _set_drop_reason(task: ShardTask, s: PlannedSet, keys: list[Key], kept: list[int]) -> str | None:
    if set_kind(s.kind) == HIRES and not any(task.sensors[keys[k][0]] in task.hires_sensors for k in kept):
        return "hires chip dropped"
    if not kept or len(kept) < task.min_images:
        return "too few chips"
    return None


#: glibc ``mallopt`` parameters (``malloc.h``) and the values set by :func:`_tune_allocator`.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 256 << 20
_allocator_tuned = False


def _tune_allocator() -> None:
    """Let glibc keep freed region buffers in the heap, once per process.

    Regions and their temporaries (a few MB each) are above glibc's default mmap threshold, so each
    one is mapped, zero-filled page by page and unmapped again: in a fresh worker process that is
    about a quarter of a million page faults per 100 MB of input. With a 32 MB mmap threshold and a
    256 MB trim threshold the buffers are reused instead (the process keeps up to 256 MB of free heap
    until it exits; so only in worker processes). A no-op where the C library has no ``mallopt``
    (not glibc).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def write_shard(task: ShardTask) -> ShardResult:
    """Read, judge and write the chips of one shard (runs on a worker).

    Args:
        task: The sets and the rules.

    Returns:
        Where every kept image's chip is, drop counts and per-band sums.

    Raises:
        ChipReadError: A grid is rotated.
        A2maeError: A file cannot be opened (the message names it).
    """
    if task.worker_process:
        _tune_allocator()
    res = ShardResult()
    writer = _PartWriter(task)
    sums = _Sums()
    try:
        set_keys = _set_keys(task)
        for a, b, wins in _batches(task, set_keys):
            read = ReadTask(task.chip, task.scenes, tuple(wins), task.s3, task.gdal_cache_mb)
            chips = dict(zip(wins, read_chips(read), strict=True))
            res.chips_read += len(wins)
            drop = {w: _drop_reason(cd, task) for w, cd in chips.items()}
            res.chips_dropped.update(r for r in drop.values() if r)
            written: dict[Key, tuple[int, int]] = {}
            for si in range(a, b):
                s = task.sets[si]
                keys = set_keys[si]
                kept = [k for k, key in enumerate(keys) if drop[key] is None]
                reason = _set_drop_reason(task, s, keys, kept)
                if reason:
                    res.sets_dropped[reason] += 1
                    continue
                new = list(dict.fromkeys(keys[k] for k in kept if keys[k] not in written))
                writer.reserve(sum(chips[key].nbytes for key in new))
                names = ("all", "train") if s.split == "train" else ("all",)
                for key in new:
                    data = np.ascontiguousarray(chips[key].data)
                    written[key] = writer.write(data)
                    stats = band_stats(data, chips[key].bad)
                    sums.add(names, task.sensors[key[0]], task.scenes[key[0]].bands, stats)
                images = []
                for k in kept:
                    cd = chips[keys[k]]
                    part, off = written[keys[k]]
                    images.append(KeptImage(k, part, off, cd.nbytes, cd.nodata_fraction, cd.cloud_fraction))
                res.kept.append((si, images))
            res.chips_written += len(written)
    finally:
        res.parts = writer.close()
    res.sums = sums.result()
    return res
