"""Does a catalog still describe its files? Checks tile runs before it cuts a scene.

A scene file replaced at the same path after ingest (new pixels) must never be cut under its old
scene id and content hash. Each catalog row records every file of its scene as ingest saw it
(:class:`~a2mae.ingest.catalog.SourceFile`); :func:`changed_scenes` compares them with the files as
they are now:

* local files: the size, then the sha256 of the first :data:`~a2mae.ingest.catalog.HEAD_BYTES` (the
  GeoTIFF header and usually the first blocks); when the modification time differs but those match,
  the whole file's MD5 decides (a ``touch`` is not a change). With ``full``, every file's MD5 is
  compared.
* S3 objects: the ETag (one HEAD request per object).
* http(s) assets and rows written before files were recorded are not checked.

A file that is gone, or a store that cannot be reached, is left to the chip reader, whose error names
the scene.

The duplicate rows of a catalog (:func:`duplicate_rows`) would put every chip of a scene in two sets:
identical rows are folded with a note, rows that disagree are refused.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from a2mae.errors import A2maeError
from a2mae.ingest.catalog import HEAD_BYTES, SceneRecord, SourceFile
from a2mae.ingest.errors import CatalogDuplicates as CatalogDuplicates  # re-exported
from a2mae.io.storage import FileInfo, S3Settings, content_md5, file_info, is_s3

__all__ = ["CatalogDuplicates", "changed_scenes", "duplicate_rows", "file_change"]


def file_change(
    f: SourceFile,
    settings: S3Settings | None = None,
    *,
    full: bool = False,
    store_gone: threading.Event | None = None,
) -> str | None:
    """How one file differs from what ingest recorded, or None (unchanged, gone, or not checkable).

    Args:
        f: The file as ingest saw it.
        settings: S3 settings for objects.
        full: Compare the MD5 of every local file, not only when its modification time changed.
        store_gone: Set once the S3 store cannot be reached; later S3 files are then not asked for
            (the chip reader names the store).

    Returns:
        E.g. ``its size changed (25,000 -> 26,000 bytes)``, or None.
    """
    if is_s3(f.uri):
        if f.etag is None or (store_gone is not None and store_gone.is_set()):
            return None
        try:
            now = file_info(f.uri, settings)
        except A2maeError:
            if store_gone is not None:
                store_gone.set()
            return None  # gone or unreachable: the chip reader says so, naming the scene
        return None if now.etag == f.etag else f"its ETag changed ({f.etag} -> {now.etag})"
    if "://" in f.uri:
        return None
    try:
        st = os.stat(f.uri)
        if st.st_size != f.size:
            return f"its size changed ({f.size:,} -> {st.st_size:,} bytes)"
        if f.head_sha256 is not None:
            with open(f.uri, "rb") as fh:
                if hashlib.sha256(fh.read(HEAD_BYTES)).hexdigest() != f.head_sha256:
                    return f"its first {HEAD_BYTES // 1024} KiB differ"
        if full or st.st_mtime_ns != f.mtime_ns:
            info = FileInfo(uri=f.uri, size=st.st_size, mtime_ns=st.st_mtime_ns)
            if content_md5(info, settings) != f.md5:
                return "its content differs (MD5)"
    except (OSError, A2maeError):
        return None
    return None


def _scene_change(
    rec: SceneRecord, settings: S3Settings | None, full: bool, store_gone: threading.Event
) -> str | None:
    for f in rec.files or ():
        why = file_change(f, settings, full=full, store_gone=store_gone)
        if why is not None:
            return f"{f.uri} changed since it was ingested ({why})"
    return None


def changed_scenes(
    records: Sequence[SceneRecord],
    settings: S3Settings | None = None,
    *,
    full: bool = False,
    workers: int = 8,
) -> list[tuple[SceneRecord, str]]:
    """The scenes a file of which changed since ingest, each with ``<file> changed ... (<how>)``, in order.

    Args:
        records: Catalog rows.
        settings: S3 settings for objects.
        full: Compare every local file's MD5 (reads every byte).
        workers: Threads checking scenes at once.

    Returns:
        ``(record, reason)`` of each changed scene.
    """
    checked = [r for r in records if r.files]
    if not checked:
        return []
    gone = threading.Event()
    with ThreadPoolExecutor(max(1, min(workers, len(checked)))) as pool:
        reasons = list(pool.map(lambda r: _scene_change(r, settings, full, gone), checked))
    return [(r, why) for r, why in zip(checked, reasons, strict=True) if why is not None]


def duplicate_rows(records: Sequence[SceneRecord], where: str) -> tuple[list[SceneRecord], list[str]]:
    """Fold identical repeated rows; refuse rows that disagree about one scene or one source.

    Args:
        records: Catalog rows, in stored order.
        where: The catalog, for the messages.

    Returns:
        ``(rows without repeats, one note per folded scene)``.

    Raises:
        CatalogDuplicates: Two different rows for one scene id, or two scenes of one source file or
            folder (a file replaced after ingest and ingested again by an older a2mae).
    """
    by_id: dict[str, list[SceneRecord]] = defaultdict(list)
    for r in records:
        by_id[r.scene_id].append(r)
    notes: list[str] = []
    kept: list[SceneRecord] = []
    for sid, rows in by_id.items():
        if any(r != rows[0] for r in rows[1:]):
            raise CatalogDuplicates(
                f"{where}: scene {sid} has {len(rows)} different rows (sources "
                f"{', '.join(sorted({r.source for r in rows}))}); remove it with `a2mae catalog rm {sid}` "
                "and ingest its files again"
            )
        if len(rows) > 1:
            notes.append(f"{where}: scene {sid} is stored {len(rows)} times; used once")
        kept.append(rows[0])
    by_source: dict[str, list[str]] = defaultdict(list)
    for r in kept:
        by_source[r.source].append(r.scene_id)
    for source, ids in by_source.items():
        if len(ids) > 1:
            raise CatalogDuplicates(
                f"{where}: {source} has {len(ids)} scene rows ({', '.join(ids)}): its files were replaced "
                "after ingest; ingest it again (one row of its current content then replaces them)"
            )
    return kept, notes
