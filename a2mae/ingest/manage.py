"""``a2mae catalog list|rm``: see and remove catalog scenes, so that one bad scene never blocks a catalog.

Listing is lenient: a row that no longer validates (edited by hand, written by another version) is
shown with its problem instead of failing the whole catalog. Removal works on the stored rows as they
are (valid or not), under the catalog's writer lock, and rewrites the catalog atomically; an unknown
scene id refuses the whole removal (nothing written).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from a2mae.ingest.catalog import _JSON_COLUMNS, SceneRecord
from a2mae.ingest.errors import CatalogError as CatalogError  # re-exported
from a2mae.io.atomic import atomic_path, remove_stale_temporaries
from a2mae.io.lock import writer_lock

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class CatalogRow:
    """One stored row: its scene id, the record when the row is valid, else what is wrong with it."""

    scene_id: str
    record: SceneRecord | None
    problem: str | None = None


def _read_table(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    if not path.exists():
        raise CatalogError(f"{path}: no such catalog; create one with `a2mae ingest SRC --catalog {path}`")
    if not path.is_file():
        raise CatalogError(f"{path}: is a folder; give the catalog's .parquet file")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise CatalogError(
            f"{path}: not a readable catalog ({' '.join(str(err).split())[:160]}); "
            "move it away and ingest again"
        ) from None
    if "scene_id" not in table.column_names:
        raise CatalogError(f"{path}: not an a2mae scene catalog (no scene_id column)")
    return table


def _row_problem(row: dict[str, Any]) -> tuple[SceneRecord | None, str | None]:
    try:
        d = dict(row)
        for col in _JSON_COLUMNS:
            d[col] = json.loads(d[col]) if d.get(col) is not None else None
        return SceneRecord.model_validate(d), None
    except Exception as err:  # JSON or validation errors: the row is shown, not trusted
        return None, " ".join(str(err).split())[:160]


def list_scenes(path: str | Path) -> list[CatalogRow]:
    """Every stored row of a catalog, valid or not, in stored order.

    Raises:
        CatalogError: Missing, a folder, or not a Parquet catalog.
    """
    table = _read_table(Path(path))
    out = []
    for row in table.to_pylist():
        record, problem = _row_problem(row)
        out.append(CatalogRow(str(row.get("scene_id")), record, problem))
    return out


def remove_scenes(path: str | Path, scene_ids: Sequence[str], timeout_s: float) -> list[str]:
    """Remove scenes from a catalog (atomic, under the catalog's writer lock).

    Args:
        path: The catalog.
        scene_ids: Scene ids to remove (as ``a2mae catalog list`` shows them).
        timeout_s: How long to wait for another writer (``data.lock_timeout_s``).

    Returns:
        The removed ids, in stored order.

    Raises:
        CatalogError: The catalog cannot be read, or an id is not in it (nothing is written).
        LockBusy: Another writer kept the catalog longer than ``timeout_s``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    wanted = list(dict.fromkeys(scene_ids))
    if not wanted:
        raise CatalogError("no scene id given; `a2mae catalog list` shows them")
    _read_table(path)  # refuse a missing or foreign file before creating a lock next to it
    with writer_lock(path, timeout_s, setting="data.lock_timeout_s"):
        remove_stale_temporaries(path)
        table = _read_table(path)  # again, under the lock
        ids = [str(v) for v in table.column("scene_id").to_pylist()]
        missing = [s for s in wanted if s not in ids]
        if missing:
            raise CatalogError(
                f"{path}: no scene {', '.join(missing[:5])} in the catalog; "
                "`a2mae catalog list` shows the ids"
            )
        keep = pa.array([s not in wanted for s in ids])
        with atomic_path(path) as tmp:
            pq.write_table(table.filter(keep), tmp, compression="zstd")
    return [s for s in ids if s in wanted]
