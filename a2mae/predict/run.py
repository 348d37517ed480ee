"""``a2mae predict``: apply a registered model to scenes, streaming, with bounded memory.

For each scene (or before/after pair) the output grid is cut into windows (:mod:`a2mae.predict.windows`),
batches of windows run in parallel (:func:`a2mae.executor.run_tasks`: local processes, or Ray Data
actors holding the model, :mod:`a2mae.predict.ray_data`), and the results are consumed here as they
arrive: dense tasks blend them into a disk-backed accumulator (:mod:`a2mae.predict.rasters`),
per-chip tasks append them to a GeoParquet file. Nothing holds a whole scene.

Outputs (docs/predict.md) go to a staging folder next to ``out`` (or in a temporary folder for an
``s3://`` prefix) and are published at the end, all at once: a failure (bad input, interruption,
full disk) leaves nothing half-written. Every output records the model's name, version and run id
and the input scene ids; ``manifest.json`` lists them all.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from a2mae.config import Params, PredictConfig, RegistryConfig
from a2mae.console import progress as progress_bar
from a2mae.errors import A2maeError
from a2mae.io.storage import S3Settings
from a2mae.predict import rasters
from a2mae.predict.errors import PredictError
from a2mae.predict.infer import BatchResult, BatchTask, run_batch
from a2mae.predict.model import PredictModel
from a2mae.predict.scenes import Job
from a2mae.predict.windows import grid, weights

MANIFEST = "manifest.json"


@dataclass
class PredictReport:
    """What a predict run wrote.

    Attributes:
        out: The output folder or ``s3://`` prefix.
        model: Model provenance (name, version, run id, URI).
        task: The model's task.
        outputs: Per job: ``key``, ``scene_ids`` and ``files`` (paths relative to ``out``).
        windows: Windows run through the model.
        pixels: Input pixels covered (grid pixels times images).
        seconds: Wall time.
    """

    out: str
    model: dict[str, str]
    task: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    windows: int = 0
    pixels: int = 0
    seconds: float = 0.0


# ------------------------------------------------------------------------------------- execution
def execute(
    tasks: Sequence[BatchTask], cfg: PredictConfig, on_done: Callable[[int], None] | None = None
) -> Iterator[BatchResult]:
    """Run the batches (local processes, or Ray Data actors when ``predict.executor=ray``)."""
    if cfg.executor == "ray":
        from a2mae.predict.ray_data import run_ray_data

        yield from run_ray_data(tasks, cfg.workers, cfg.ray_address, on_done)
        return
    from a2mae.executor import in_process, run_tasks

    if in_process("local", cfg.workers, len(tasks)):
        yield from _pipelined(tasks, on_done)
        return
    for _, result in run_tasks(run_batch, tasks, workers=cfg.workers, ordered=False, on_done=on_done):
        yield result


def _pipelined(tasks: Sequence[BatchTask], on_done: Callable[[int], None] | None) -> Iterator[BatchResult]:
    """In this process: a reader thread reads the next batches while the model runs on this one.

    All reads happen in the reader thread (GDAL datasets are used by one thread at a time); GDAL and
    numpy release the GIL, so reading overlaps the forward pass.
    """
    from concurrent.futures import ThreadPoolExecutor

    from a2mae.predict.infer import infer_batch, read_batch

    ahead = 2
    with ThreadPoolExecutor(1, thread_name_prefix="a2mae-read") as pool:
        futures = {i: pool.submit(read_batch, tasks[i]) for i in range(min(ahead, len(tasks)))}
        for i, task in enumerate(tasks):
            data = futures.pop(i).result()
            if i + ahead < len(tasks):
                futures[i + ahead] = pool.submit(read_batch, tasks[i + ahead])
            result = infer_batch(task, data)
            if on_done is not None:
                on_done(i)
            yield result


def batch_tasks(job: Job, model: PredictModel, cfg: PredictConfig, s3: Any) -> list[BatchTask]:
    """The batches of a job: dense tasks overlap and blend, per-chip tasks tile without overlap."""
    dense_embeddings = model.downstream is None and cfg.dense_embeddings
    overlap = cfg.overlap if model.dense or dense_embeddings else 0
    align = model.patch_size if dense_embeddings else 1
    wins = grid(job.height, job.width, cfg.window, overlap, align)
    common = {
        "model": model,
        "sources": job.sources,
        "crs": job.crs,
        "transform": job.transform,
        "win": cfg.window,
        "sensor": job.sensor,
        "bands": job.bands,
        "datetime": job.datetime,
        "norm": job.norm,
        "dense": dense_embeddings,
        "s3": s3,
        "gdal_cache_mb": cfg.gdal_cache_mb,
    }
    b = cfg.batch_size
    return [BatchTask(windows=tuple(wins[i : i + b]), **common) for i in range(0, len(wins), b)]


# ------------------------------------------------------------------------------------ dense maps
def _dense_map(
    job: Job,
    model: PredictModel,
    cfg: PredictConfig,
    results: Iterator[BatchResult],
    folder: Path,
    work: Path,
) -> list[str]:
    """Blend window probabilities into the class map (+ quality, + probabilities) COGs."""
    k, win = len(model.classes), cfg.window
    wts = weights(win, cfg.overlap)
    acc = rasters.Accumulator(work / "acc.tif", job.height, job.width, k)
    flags = rasters.FlagLayer(work / "flags.tif", job.height, job.width)
    try:
        _accumulate(results, acc, flags, wts)
        return _write_maps(job, model, cfg, acc, flags, folder, work)
    finally:
        acc.close()
        flags.close()


def _add(acc: Any, flags: Any, res: BatchResult, wts: np.ndarray) -> None:
    for i, (r, c) in enumerate(res.windows):
        acc.add(r, c, res.probs[i], wts)  # type: ignore[index]
        flags.set(r, c, res.nodata[i], res.cloud[i])


def _accumulate(results: Iterator[BatchResult], acc: Any, flags: Any, wts: np.ndarray) -> None:
    """Blend every result into ``acc``; a writer thread adds one result while the next is computed."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="a2mae-blend") as writer:
        pending = None
        for res in results:
            if pending is not None:
                pending.result()
            pending = writer.submit(_add, acc, flags, res, wts)
        if pending is not None:
            pending.result()


def _write_maps(
    job: Job, model: PredictModel, cfg: PredictConfig, acc: Any, flags: Any, folder: Path, work: Path
) -> list[str]:
    assert model.downstream is not None
    name = model.downstream.map_name
    k = len(model.classes)
    base = rasters.provenance_tags(model.provenance(), job.scene_ids, {"task": model.task})
    geo = (job.crs, job.transform, job.width, job.height)
    cmap = rasters.colormap(k)
    cls = rasters.TiledWriter(work / f"{name}.tif", *geo, 1, "uint8", rasters.NODATA, cmap)
    qual = rasters.TiledWriter(work / "quality.tif", *geo, 1, "uint8", rasters.NODATA)
    prob = (
        rasters.TiledWriter(work / "probabilities.tif", *geo, k, "uint8", rasters.NODATA)
        if cfg.probabilities
        else None
    )
    for r, c, h, w in rasters.blocks(job.height, job.width):
        p, _ = acc.read(r, c, h, w)
        q = flags.read(r, c, h, w)
        bad = q == rasters.NODATA
        cls.write(r, c, np.where(bad, rasters.NODATA, p.argmax(0)).astype(np.uint8)[None])
        qual.write(r, c, q[None])
        if prob is not None:
            pct = np.rint(np.clip(p, 0, 1) * 100).astype(np.uint8)
            pct[:, bad] = rasters.NODATA
            prob.write(r, c, pct)
    written = []
    tags = {**base, "A2MAE_CLASS_NAMES": json.dumps(list(model.classes))}
    outputs = [
        (cls, f"{name}.tif", tags, [name]),
        (qual, "quality.tif", {**base, "A2MAE_QUALITY": "0 clear, 1 cloud, 255 nodata"}, ["quality"]),
    ]
    if prob is not None:
        units = {**base, "A2MAE_UNITS": "percent"}
        outputs.append((prob, "probabilities.tif", units, [f"p_{c}" for c in model.classes]))
    for writer, fname, extra, desc in outputs:
        rasters.to_cog(writer.finish(extra, desc), folder / fname, rasters.NODATA)
        written.append(fname)
    rasters.preview_png(folder / f"{name}.tif", folder / "preview.png")
    return [*written, "preview.png"]


# ------------------------------------------------------------------------------------- per chip
def _chip_columns(model: PredictModel) -> tuple[dict[str, Any], dict[str, int]]:
    import pyarrow as pa

    cols: dict[str, Any] = {
        "scene_id": pa.string(), "row": pa.int32(), "col": pa.int32(), "sensor": pa.string(),
        "model_name": pa.string(), "model_version": pa.string(), "run_id": pa.string(),
        "nodata_fraction": pa.float32(), "cloud_fraction": pa.float32(),
    }  # fmt: skip
    task = model.downstream
    if task is not None:
        cols.update(task.chip_columns(model.classes, model.multilabel))
        return cols, {"scores": len(model.classes)}
    return cols, {}


def _chip_rows(
    job: Job, model: PredictModel, res: BatchResult
) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
    n = len(res.windows)
    area = float(res.nodata[0].size) if n else 1.0
    prov = model.provenance()
    cols: dict[str, list[Any]] = {
        "scene_id": [job.scene_ids[0]] * n,
        "row": [r for r, _ in res.windows],
        "col": [c for _, c in res.windows],
        "sensor": [job.sensor] * n,
        "model_name": [prov["model_name"]] * n,
        "model_version": [prov["model_version"]] * n,
        "run_id": [prov["run_id"]] * n,
        "nodata_fraction": [float(np.count_nonzero(b)) / area for b in res.nodata],
        "cloud_fraction": [float(np.count_nonzero(c)) / area for c in res.cloud],
    }
    task = model.downstream
    if task is None:
        assert res.pooled is not None  # an embeddings batch has them
        return cols, {"embedding": res.pooled}
    assert res.probs is not None  # a fine-tuned model's batch has them
    values, fixed = task.chip_values(res.probs, model.classes, model.multilabel)
    cols.update(values)
    return cols, fixed


def _chips(
    job: Job,
    model: PredictModel,
    cfg: PredictConfig,
    results: Iterator[BatchResult],
    folder: Path,
    work: Path,
) -> list[str]:
    """Per-chip labels/scores or embeddings as GeoParquet (+ the dense embedding COG)."""
    from a2mae.predict.geoparquet import ChipWriter

    fname = model.downstream.chips_file if model.downstream is not None else "embeddings.parquet"
    cols, fixed = _chip_columns(model)
    meta = {
        **model.provenance(),
        "task": model.task,
        "scene_ids": list(job.scene_ids),
        "classes": list(model.classes),
    }
    writer: ChipWriter | None = None
    dense = (
        _DenseEmbeddings(job, model, cfg, work) if model.downstream is None and cfg.dense_embeddings else None
    )
    try:
        for res in results:
            values, fixed_values = _chip_rows(job, model, res)
            if writer is None:
                sizes = {
                    k: int(np.asarray(v).reshape(len(res.windows), -1).shape[1])
                    for k, v in fixed_values.items()
                }
                writer = ChipWriter(
                    folder / fname,
                    job.crs,
                    job.transform,
                    cfg.window,
                    sizes or fixed,
                    cols,
                    job.datetime,
                    meta,
                )
            writer.write(res.windows, values, fixed_values)
            if dense is not None:
                dense.add(res)
    finally:
        if writer is not None:
            writer.close()
        if dense is not None:
            dense.close()
    out = [fname]
    if dense is not None:
        out.append(dense.finish(folder, meta))
    return out


class _DenseEmbeddings:
    """Blended token maps of the encoder on the token grid (pixel size x patch)."""

    def __init__(self, job: Job, model: PredictModel, cfg: PredictConfig, work: Path) -> None:
        self.p = model.patch_size
        self.job, self.model, self.work = job, model, work
        self.h, self.w = job.height // self.p, job.width // self.p
        self.wt = weights(cfg.window // self.p, cfg.overlap // self.p)
        self.acc: rasters.Accumulator | None = None

    def add(self, res: BatchResult) -> None:
        maps = res.maps  # [n, D, wt, wt]
        if self.acc is None:
            self.acc = rasters.Accumulator(self.work / "emb_acc.tif", self.h, self.w, maps.shape[1])  # type: ignore[union-attr]
        for i, (r, c) in enumerate(res.windows):
            self.acc.add(r // self.p, c // self.p, maps[i], self.wt)  # type: ignore[index]

    def close(self) -> None:
        if self.acc is not None:
            self.acc.close()

    def finish(self, folder: Path, meta: dict[str, Any]) -> str:
        import rasterio

        a, b, c, d, e, f = self.job.transform
        t = (a * self.p, b, c, d, e * self.p, f)
        with rasterio.open(self.work / "emb_acc.tif", "r+") as ds:
            k = ds.count - 1
            out = rasters.TiledWriter(
                self.work / "embeddings.tif", self.job.crs, t, self.w, self.h, k, "float32", None
            )
            acc = rasters.Accumulator.__new__(rasters.Accumulator)
            acc.k, acc.ds = k, ds
            for r, cc, h, w in rasters.blocks(self.h, self.w):
                out.write(r, cc, acc.read(r, cc, h, w)[0].astype(np.float32))
        tags = rasters.provenance_tags(self.model.provenance(), self.job.scene_ids, {"task": "embeddings"})
        rasters.to_cog(
            out.finish(tags, [f"e{i}" for i in range(k)]), folder / "embeddings.tif", None, "average"
        )
        return "embeddings.tif"


# ------------------------------------------------------------------------------------- the run
def run_job(
    job: Job, model: PredictModel, cfg: PredictConfig, s3: S3Settings, folder: Path, progress: bool
) -> dict[str, Any]:
    """Compute the outputs of one job into ``folder`` (``cfg``: ``predict``); returns its manifest entry."""
    tasks = batch_tasks(job, model, cfg, s3)
    n_windows = sum(len(t.windows) for t in tasks)
    folder.mkdir(parents=True)
    with (
        tempfile.TemporaryDirectory(prefix=".work-", dir=folder.parent) as tmp,
        progress_bar(f"predict {job.key}", n_windows, "windows", enabled=progress and len(tasks) > 1) as bar,
    ):
        step = lambda i: bar.advance(len(tasks[i].windows))  # noqa: E731
        results = execute(tasks, cfg, step)
        if model.dense:
            files = _dense_map(job, model, cfg, results, folder, Path(tmp))
        else:
            files = _chips(job, model, cfg, results, folder, Path(tmp))
    return {
        "key": job.key,
        "scene_ids": list(job.scene_ids),
        "files": [f"{job.key}/{f}" for f in files],
        "windows": n_windows,
        "pixels": job.width * job.height * len(job.sources),
        "crs": job.crs,
        "transform": list(job.transform),
        "width": job.width,
        "height": job.height,
    }


def _exists(out: str) -> bool:
    from a2mae.io.storage import is_s3, list_files

    if is_s3(out):
        try:
            return bool(list_files(out))
        except A2maeError:
            return False
    return Path(out).exists()


def _stage_for(out: str) -> Path:
    from a2mae.io.storage import is_s3

    if is_s3(out):
        return Path(tempfile.mkdtemp(prefix="a2mae-predict-"))
    target = Path(out).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.predict-", dir=target.parent))


def publish(stage: Path, out: str, overwrite: bool, settings: Any = None) -> None:
    """Move the finished staging folder to ``out`` at once (local) or upload it, manifest last (S3)."""
    from a2mae.io.storage import is_s3, put_file, put_tree

    if is_s3(out):
        manifest = stage / MANIFEST
        keep = manifest.read_bytes()
        manifest.unlink()
        put_tree(stage, out, settings)
        manifest.write_bytes(keep)
        put_file(manifest, f"{out.rstrip('/')}/{MANIFEST}", settings)
        return
    target = Path(out).absolute()
    old = None
    if target.exists():
        if not overwrite:
            raise PredictError(f"{out}: already exists; pass --overwrite or choose another --out")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return "no space left" in str(err).lower()


def predict(
    sources: Sequence[str],
    out: str | os.PathLike[str],
    params: Params,
    *,
    model_uri: str | None = None,
    model: PredictModel | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictReport:
    """Apply a model to scenes and write the outputs to ``out`` (all at once, or nothing).

    Args:
        sources: Scenes (files, per-band folders, ``s3://`` prefixes) or catalogs (``.parquet``); for
            change detection, in (before, after) pairs.
        out: Output folder or ``s3://`` prefix (must not exist unless ``overwrite``).
        params: Parameters (``predict`` section; ``data`` for reading scenes; ``registry``).
        model_uri: Model to apply (default ``predict.model``).
        model: An already resolved model (tests, benchmarks); wins over ``model_uri``.
        overwrite: Replace an existing ``out``.
        progress: Progress bar on a terminal.

    Returns:
        What was written.

    Raises:
        PredictError: Bad input (one line): unknown model, wrong sensor or bands, a scene smaller than
            a window, a pair that does not overlap, an existing output, a full disk.
    """
    from a2mae.predict.scenes import plan_jobs, read_sources
    from a2mae.sensors import get_registry

    t0 = time.perf_counter()
    out = str(out)
    if _exists(out) and not overwrite:
        raise PredictError(f"{out}: already exists; pass --overwrite or choose another --out")
    records = read_sources(sources, params.data)  # a bad scene is refused before the model is fetched
    stage = _stage_for(out)
    try:
        pm = model or _resolve(model_uri or params.predict.model, params.registry, stage)
        win = params.predict.window
        if win % pm.patch_size:
            raise PredictError(
                f"predict.window={win} is not a multiple of the model's patch size {pm.patch_size}"
            )
        jobs = plan_jobs(records, pm, get_registry(params.data.sensor_files), win)
        s3 = params.data.s3.settings()
        report = PredictReport(out=out, model=pm.provenance(), task=pm.task)
        for job in jobs:
            entry = run_job(job, pm, params.predict, s3, stage / job.key, progress)
            report.outputs.append(entry)
            report.windows += entry["windows"]
            report.pixels += entry["pixels"]
        shutil.rmtree(stage / ".model", ignore_errors=True)
        report.seconds = time.perf_counter() - t0
        (stage / MANIFEST).write_text(json.dumps(asdict(report), indent=1, default=str))
        publish(stage, out, overwrite, s3)
        return report
    except (OSError, RuntimeError) as err:
        if _disk_full(err):
            raise PredictError(
                f"{out}: disk full while writing the outputs; free space or choose another --out"
            ) from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _resolve(uri: str, registry: RegistryConfig, stage: Path) -> PredictModel:
    from a2mae.predict.model import resolve_model
    from a2mae.tracking.client import tracking_uri

    return resolve_model(uri, tracking_uri(registry), stage / ".model")
