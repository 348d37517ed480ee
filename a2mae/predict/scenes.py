"""The scenes to predict on: sources -> catalog records -> readable :class:`SceneSource` grids.

A source is a scene (a raster file, a folder of per-band files, an ``s3://`` prefix: read as
``a2mae ingest`` reads it, nothing is written) or a scene catalog (``.parquet`` from ``a2mae ingest``).
:func:`prepare` checks a scene against the model (sensor, bands, size) and returns the
:class:`Job`: the output grid (the scene's finest grid, or for a before/after pair the part of the
*before* grid that both scenes cover) and one :class:`~a2mae.stssd.chips.SceneSource` per image, all
on that grid (bands of other GSDs, and the *after* scene of another GSD or grid, are resampled onto it
by :func:`a2mae.stssd.chips.read_region_dn`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from a2mae.config import DataConfig
from a2mae.errors import A2maeError
from a2mae.ingest.catalog import SceneRecord, read_catalog
from a2mae.predict.errors import PredictError
from a2mae.predict.model import PredictModel
from a2mae.sensors.registry import SensorRegistry
from a2mae.stssd.chips import SceneSource


@dataclass(frozen=True)
class Job:
    """One output to compute: a scene (or a before/after pair) on one grid.

    Attributes:
        key: Output folder name (the scene id, or ``<before>__<after>``).
        scene_ids: Input scene ids.
        sources: One reader per image, in model order (before, after).
        crs: CRS of the grid (``EPSG:nnnn`` or WKT).
        transform: Affine ``(a, b, c, d, e, f)`` of the output grid.
        width: Grid columns.
        height: Grid rows.
        sensor: Sensor id of the (first) scene.
        bands: Bands read, in channel order.
        datetime: Acquisition time of the (last) scene, or None.
        norm: Encoder normalisation of these bands (embeddings only).
    """

    key: str
    scene_ids: tuple[str, ...]
    sources: tuple[SceneSource, ...]
    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    sensor: str
    bands: tuple[str, ...]
    datetime: datetime | None
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def read_sources(sources: Sequence[str], data: DataConfig) -> list[SceneRecord]:
    """Catalog records of the sources (scenes are read like ``a2mae ingest`` does; nothing is written).

    ``data`` is the ``data`` section (sensor files, S3 settings, growth-period rule).

    Raises:
        PredictError: A source is missing or not a scene (one line naming it).
    """
    from a2mae.ingest.discover import discover
    from a2mae.ingest.scene_reader import ReadContext, read_scene
    from a2mae.sensors import get_registry
    from a2mae.sensors.detect import band_vocabulary

    if not sources:
        raise PredictError("no scene given; pass scene files, folders, s3:// prefixes or a catalog .parquet")
    registry = get_registry(data.sensor_files)
    settings = data.s3.settings()
    ctx = ReadContext(registry=registry, settings=settings, growth=data.growth_period)
    out: list[SceneRecord] = []
    try:
        for src in sources:
            if str(src).endswith(".parquet"):
                rows = read_catalog(src)
                if not rows:
                    raise PredictError(f"{src}: no such catalog, or it holds no scene")
                out.extend(
                    sorted(rows, key=lambda r: (r.datetime is None, r.datetime or datetime.min, r.scene_id))
                )
                continue
            for spec in discover([src], band_vocabulary(registry), settings).scenes:
                out.append(read_scene(spec, ctx))
    except PredictError:
        raise
    except A2maeError as err:
        raise PredictError(str(err)) from None
    return out


def _source(
    rec: SceneRecord,
    bands: Sequence[str],
    registry: SensorRegistry,
    transform: tuple[float, float, float, float, float, float],
) -> SceneSource:
    files = {bf.band: bf for bf in rec.band_files}
    product = registry.get(rec.sensor).product(rec.product)
    chosen = tuple(files[b] for b in bands)
    return SceneSource(
        scene_id=rec.scene_id,
        content_hash=rec.content_hash,
        transform=transform,
        bands=tuple(bands),
        band_files=chosen,
        nodata=tuple(bf.nodata if bf.nodata is not None else product.nodata for bf in chosen),
        qa_file=rec.qa_file,
        qa=product.qa if rec.qa_file is not None else None,
        scale=rec.scale,
        offset=rec.offset,
    )


def check_bands(rec: SceneRecord, model: PredictModel) -> tuple[str, ...]:
    """The bands to read from ``rec`` for ``model``.

    Raises:
        PredictError: The scene's sensor is not the model's, or bands are missing (named).
    """
    if model.downstream is None:  # the encoder: the scene's own bands
        return tuple(rec.bands)
    if rec.sensor != model.sensor:
        raise PredictError(
            f"scene {rec.scene_id} ({rec.source}) is {rec.sensor} but {model.name} was trained on "
            f"{model.sensor}; give a {model.sensor} scene"
        )
    missing = [b for b in model.bands if b not in rec.bands]
    if missing:
        raise PredictError(
            f"scene {rec.scene_id} ({rec.source}) lacks bands {missing} that {model.name} was trained on "
            f"(it has {list(rec.bands)})"
        )
    return tuple(model.bands)


def _check_size(key: str, height: int, width: int, window: int) -> None:
    if height < window or width < window:
        raise PredictError(
            f"{key}: {width}x{height} px is smaller than one window of {window} px; lower predict.window "
            "(a multiple of the patch size) or use a larger scene"
        )


def single_job(rec: SceneRecord, model: PredictModel, registry: SensorRegistry, window: int) -> Job:
    """The job of one scene on its own finest grid.

    Raises:
        PredictError: Wrong sensor, missing bands, or a scene smaller than one window.
    """
    bands = check_bands(rec, model)
    _check_size(f"scene {rec.scene_id} ({rec.source})", rec.height, rec.width, window)
    norm = None
    if model.downstream is None:
        from a2mae.predict.model import encoder_norm

        known = encoder_norm_bands(model, rec)
        bands = known
        norm = encoder_norm(model, rec.sensor, bands)
    src = _source(rec, bands, registry, rec.transform)
    return Job(
        key=rec.scene_id,
        scene_ids=(rec.scene_id,),
        sources=(src,),
        crs=rec.crs,
        transform=rec.transform,
        width=rec.width,
        height=rec.height,
        sensor=rec.sensor,
        bands=bands,
        datetime=rec.datetime,
        norm=norm,
    )


def encoder_norm_bands(model: PredictModel, rec: SceneRecord) -> tuple[str, ...]:
    """The scene's bands the encoder has statistics for (registry order).

    Raises:
        PredictError: None of them (the encoder was not trained on this sensor).
    """
    from a2mae.predict.model import encoder_stats

    bands = encoder_stats(model).known_bands(rec.sensor, rec.bands)
    if not bands:
        raise PredictError(
            f"scene {rec.scene_id} ({rec.source}): the encoder {model.name} was not trained on {rec.sensor} "
            f"(no statistics for bands {list(rec.bands)})"
        )
    return bands


def pair_job(
    before: SceneRecord, after: SceneRecord, model: PredictModel, registry: SensorRegistry, window: int
) -> Job:
    """The job of a before/after pair: the part of the *before* grid both scenes cover.

    Raises:
        PredictError: Wrong sensor or bands, different CRSs, no overlap, or an overlap smaller than a window.
    """
    bands = check_bands(before, model)
    check_bands(after, model)
    key = f"{before.scene_id}__{after.scene_id}"
    if before.crs != after.crs:
        raise PredictError(
            f"pair {key}: the scenes are in {before.crs} and {after.crs}; reproject the after scene to "
            f"{before.crs} (gdalwarp -t_srs)"
        )
    a, _, c, _, e, f = before.transform
    left, bottom, right, top = (
        max(before.bounds[0], after.bounds[0]),
        max(before.bounds[1], after.bounds[1]),
        min(before.bounds[2], after.bounds[2]),
        min(before.bounds[3], after.bounds[3]),
    )
    col0 = max(0, math.ceil((left - c) / a - 1e-6))
    col1 = min(before.width, math.floor((right - c) / a + 1e-6))
    row0 = max(0, math.ceil((top - f) / e - 1e-6))
    row1 = min(before.height, math.floor((bottom - f) / e + 1e-6))
    if col1 <= col0 or row1 <= row0:
        raise PredictError(
            f"pair {key}: the before scene ({before.source}) and the after scene ({after.source}) do not "
            "overlap; give two scenes of the same place"
        )
    _check_size(f"pair {key}: the overlap", row1 - row0, col1 - col0, window)
    t = (a, 0.0, c + a * col0, 0.0, e, f + e * row0)
    return Job(
        key=key,
        scene_ids=(before.scene_id, after.scene_id),
        sources=(_source(before, bands, registry, t), _source(after, bands, registry, t)),
        crs=before.crs,
        transform=t,
        width=col1 - col0,
        height=row1 - row0,
        sensor=before.sensor,
        bands=bands,
        datetime=after.datetime,
    )


def plan_jobs(
    records: Sequence[SceneRecord], model: PredictModel, registry: SensorRegistry, window: int
) -> list[Job]:
    """One job per scene, or per consecutive (before, after) pair for paired tasks (change detection).

    ``registry`` holds the sensors of ``data.sensor_files``; ``window`` is ``predict.window``.

    Raises:
        PredictError: An odd number of scenes for change detection, or a scene the model cannot use.
    """
    if not model.paired:
        return [single_job(r, model, registry, window) for r in records]
    if len(records) % 2:
        raise PredictError(
            f"change detection takes scenes in before/after pairs; got {len(records)} scene(s): "
            + ", ".join(r.source for r in records)
        )
    return [pair_job(records[i], records[i + 1], model, registry, window) for i in range(0, len(records), 2)]
