"""Typed, validated parameters: ``params.yaml`` -> pydantic models.

``params.yaml`` at the repository root is the single source of defaults (it is also shipped inside
the wheel as ``a2mae/params.default.yaml``). The models below hold the types, bounds and
descriptions, never the default values, so the two cannot drift apart. :func:`load_params` layers,
in order: the defaults, an optional user file holding only the keys it changes, and ``key=value``
overrides; any bad value raises :class:`ConfigError` with one line naming the key.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from a2mae.errors import A2maeError
from a2mae.io.storage import S3Settings
from a2mae.io.yamlsafe import YamlError, load_file, load_text

_REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"
_PACKAGED_PARAMS = Path(__file__).resolve().parent / "params.default.yaml"


class ConfigError(A2maeError, ValueError):
    """A parameter file or override is invalid; the message is one line naming the key."""


#: Shared option sets: declared once, used by the parameters, the model config and the flow forms.
Executor = Literal["local", "ray"]
AnchorPolicy = Literal["random", "finest_gsd", "coarsest_gsd"]
MaskingPolicy = Literal["aligned", "complementary", "independent"]
AnchorGroupMask = Literal["consistent", "independent"]
FinetuneProtocol = Literal["linear_probe", "full"]
#: DVC remotes of the repository's ``.dvc/config``: ``local`` (a folder) and ``s3`` (the services' store).
DvcRemote = Literal["local", "s3"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- data
class S3Config(_Section):
    """Where S3 objects live (s3fs for listing and objects, GDAL for rasters)."""

    endpoint_url: str | None = Field(description="S3-compatible endpoint URL; env AWS_ENDPOINT_URL wins.")
    region: str = Field(description="Region name sent with signed requests.")
    anonymous: bool = Field(description="Send unsigned requests (public buckets).")

    def settings(self, environ: Mapping[str, str] | None = None) -> S3Settings:
        """The S3 settings of this section, environment variables winning (``AWS_ENDPOINT_URL``, ...)."""
        return S3Settings.from_env(self.endpoint_url, self.region, self.anonymous, environ)


class GrowthPeriodConfig(_Section):
    """Rule labelling a scene as growth (g) or non-growth (ng) period."""

    rule: Literal["hemisphere_months"] = Field(description="Labelling rule.")
    growth_months: list[int] = Field(description="Growth-season months in the northern hemisphere.")
    tropics_lat: float = Field(ge=0, le=90, description="|lat| below this gets period 'na'.")


class DataConfig(_Section):
    """Ingest: scene discovery and the scene catalog."""

    catalog: str = Field(description="Scene catalog (Parquet) written by `a2mae ingest`.")
    sensor_files: list[str] = Field(description="Extra sensor registry YAML files.")
    workers: int = Field(ge=1, description="Parallel metadata readers.")
    max_raster_pixels: int = Field(
        ge=1, description="A raster declaring more pixels (width x height) is refused at ingest."
    )
    lock_timeout_s: float = Field(
        ge=0, le=86400, description="How long a catalog writer waits for another one, seconds (0: refuse)."
    )
    s3: S3Config
    growth_period: GrowthPeriodConfig


# --------------------------------------------------------------------------------------------- tile
class SplitConfig(_Section):
    """Deterministic train/val/test split by ground location."""

    val_fraction: float = Field(ge=0, lt=1)
    test_fraction: float = Field(ge=0, lt=1)
    block_m: float = Field(gt=0, description="Ground block size; a block goes wholly to one split.")
    seed: int


class TileConfig(_Section):
    """Tiling of co-located scenes into STSSD image sets."""

    chip_size: int = Field(gt=0, le=2048, multiple_of=8, description="Chip side in pixels (every sensor).")
    grid_m: float = Field(gt=0, description="Spacing of candidate set centres, metres.")
    max_nodata_fraction: float = Field(ge=0, le=1)
    max_cloud_fraction: float = Field(ge=0, le=1)
    drop_bands: dict[str, list[str]] = Field(description="Per sensor, bands never written.")
    gf_s2_max_days: int = Field(ge=0, description="Pairing window of hires sets, days.")
    max_images_per_set: int = Field(ge=1, le=4)
    min_images_per_set: int = Field(ge=1, le=4, description="Sets with fewer surviving chips are dropped.")
    sets_per_location: int = Field(ge=1, description="temporal sets per grid point (rounds of best scenes).")
    temporal_sensors: list[str] = Field(description="Sensors of temporal sets (one g and one ng image each).")
    hires_sensors: list[str] = Field(description="Sensors whose images each form a hires set.")
    hires_partner: str = Field(description="Sensor paired with hires images within gf_s2_max_days.")
    thin_coarse_sets: bool = Field(
        description="Keep a set whose finest chip spans k >= 2 grid cells only at every k-th grid point."
    )
    shard_max_mb: float = Field(
        gt=0, le=2048, description="Shard size bound, MB; one worker task writes one shard."
    )
    split: SplitConfig
    executor: Executor = Field(description="Run per-scene work in local processes or Ray.")
    workers: int = Field(ge=1, description="Local worker processes.")
    ray_address: str | None = Field(description="Ray address when executor=ray.")
    chips_per_task: int = Field(ge=1, description="Chips a worker holds at once (bounds its memory).")
    gdal_cache_mb: int = Field(
        ge=8, le=65536, description="GDAL block cache per worker, MB (decoded tiles kept between regions)."
    )
    snapshot: str = Field(description="Default output folder of `a2mae tile`.")
    max_plan_mb: int = Field(
        ge=1, description="Refuse a plan whose estimated memory is above this many MB (tile.grid_m too fine)."
    )
    lock_timeout_s: float = Field(
        ge=0, le=86400, description="How long a tile run waits for another one on the same --out, seconds."
    )


# ------------------------------------------------------------------------------------------ collect
class CollectConfig(_Section):
    """Gathering scenes from a STAC API into the scene catalog (`a2mae collect`, docs/collect.md)."""

    stac_url: str | None = Field(description="Root URL of the STAC API searched (null: give --stac URL).")
    collections: list[str] = Field(
        min_length=1,
        description="Collection files: names of a2mae/collect/collections/*.yaml or paths; one sensor each.",
    )
    locations: str | None = Field(
        description="GeoJSON or GeoParquet file of points or polygons (null: generate n_locations)."
    )
    n_locations: int = Field(ge=1, description="Locations generated when no file is given.")
    seed: int = Field(description="Seed of the generated locations.")
    bbox: list[float] | None = Field(
        min_length=4,
        max_length=4,
        description="[west, south, east, north] of generated locations (null: the globe).",
    )
    location_size_m: float = Field(
        gt=0, le=100_000, description="Side of the square tiled around a point location, metres."
    )
    start: date = Field(description="First acquisition date searched (YYYY-MM-DD).")
    end: date = Field(description="Last acquisition date searched (YYYY-MM-DD).")
    max_cloud_cover: float = Field(
        ge=0, le=100, description="Scenes with more cloud cover (percent) are not taken."
    )
    scenes_per_period: int = Field(ge=1, description="Scenes kept per location, sensor and period (g/ng/na).")
    cloud_step: float = Field(
        gt=0,
        le=100,
        description="Cloud covers within this many percent count as equal; the closer date wins.",
    )
    max_items_per_search: int = Field(
        ge=1, description="Items read per search (location x collection x period)."
    )
    max_scenes: int = Field(ge=1, description="Cap on the scenes one run adds to the catalog.")
    workers: int = Field(ge=1, le=32, description="Searches run in parallel.")
    timeout_s: float = Field(gt=0, description="HTTP timeout of one STAC request, seconds.")
    watch_lookback_days: int = Field(
        ge=0, description="The STAC watcher searches from its last run minus this many days (late arrivals)."
    )


# -------------------------------------------------------------------------------------------- model
class ModelConfig(_Section):
    """A²-MAE variant, its objective and its training-time knobs (the ``model`` section).

    :class:`a2mae.models.config.A2MAEConfig` extends this with the architecture of the variant, so every
    option below is declared once and its default lives in ``params.yaml`` only.
    """

    name: str = Field(description="Registered variant name (`a2mae models`), e.g. a2mae_vit_tiny_p8_t96.")
    mask_ratio: float = Field(gt=0, lt=1, description="Mask ratio r_a on the anchor image.")
    anchor_policy: AnchorPolicy = Field(description="Which image of a set is the anchor.")
    masking: MaskingPolicy = Field(description="How the anchor's mask is carried to the other images.")
    anchor_group_mask: AnchorGroupMask = Field(
        description="Anchor token groups share one ground-cell mask, or each draws its own."
    )
    stratified_anchor_mask: bool = Field(
        description="Mask the anchor ground under the other images at ratio r exactly."
    )
    r_extra: float = Field(ge=0, le=1, description="Mask ratio of other tokens on visible anchor ground.")
    r_out: float = Field(ge=0, le=1, description="Mask ratio of tokens outside the anchor footprint.")
    visible_fraction: float | None = Field(
        gt=0, le=1, description="Visible-token budget per set, share of its tokens (null: 1 - mask_ratio)."
    )
    supersample: int = Field(ge=1, le=16, description="Points per token side for ground footprints.")
    decoder_token_cap: int | None = Field(
        gt=0, description="Max decoder tokens per set (random masked subset); null: all."
    )
    norm_pix_loss: bool = Field(description="Normalise each target patch by its own mean and std.")
    metadata_dropout: float = Field(ge=0, le=1, description="P(drop location / GSD / time), training.")
    geo_encoding: bool = Field(
        description="Eq. 1/Eq. 2 metric sin-cos plus global and GSD terms; false: grid-index sin-cos."
    )
    g_ref_m: float = Field(gt=0, description="Reference distance G_ref of Eq. 2, metres.")
    mlp_ratio: float = Field(gt=0, description="Hidden width of the transformer MLPs, times the width.")
    drop_path_rate: float = Field(ge=0, lt=1, description="Stochastic depth of the last encoder block.")


class PretrainConfig(_Section):
    """Ray-distributed pre-training."""

    run_name: str = Field(min_length=1, description="Run name; the same name resumes the run.")
    experiment: str = Field(min_length=1, description="MLflow experiment.")
    epochs: int = Field(ge=1, description="Passes over the snapshot's training split.")
    max_steps: int | None = Field(ge=1, description="Optimiser steps (None: epochs x steps per epoch).")
    batch_size: int = Field(ge=1, description="Image sets per worker per micro-batch.")
    accum_steps: int = Field(ge=1, description="Micro-batches accumulated per optimiser step.")
    blr: float = Field(gt=0, description="Base lr; lr = blr * effective batch / 256.")
    min_lr: float = Field(ge=0, description="Final lr of the cosine schedule.")
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(ge=0, lt=1)
    grad_clip: float = Field(ge=0, description="Max total gradient norm (0: no clipping).")
    bf16: bool = Field(description="bf16 autocast on CUDA.")
    max_nonfinite_steps: int = Field(ge=1, description="Abort after this many consecutive non-finite steps.")
    seed: int
    model_overrides: dict[str, Any] = Field(description="Extra create_model options (architecture fields).")
    loader_workers: int = Field(ge=0, description="DataLoader processes per training worker.")
    num_workers: int = Field(ge=0, description="Ray Train workers (0: in-process, no Ray).")
    use_gpu: bool = Field(description="Train on GPUs (one per Ray Train worker).")
    cpus_per_worker: float = Field(gt=0)
    ray_address: str | None = Field(description="Ray cluster address (None: $RAY_ADDRESS or local).")
    ray_dashboard: bool = Field(description="Start the local Ray's dashboard (127.0.0.1).")
    storage_path: str = Field(min_length=1, description="Checkpoint storage: shared local path or s3://.")
    checkpoint_every_steps: int = Field(ge=1)
    checkpoints_to_keep: int = Field(ge=1)
    max_failures: int = Field(ge=-1, description="Restarts from the last checkpoint (-1: unlimited).")
    log_every_steps: int = Field(ge=1)
    log_images_every_steps: int = Field(
        ge=0, description="Reconstruction figures every N steps and at the first and last step (0: none)."
    )
    system_metrics: bool = Field(description="MLflow system metrics from rank 0.")


class AblationVariant(_Section):
    """One pre-training variant of the ablation."""

    name: str = Field(min_length=1, description="Row name in the ablation table.")
    masking: MaskingPolicy
    geo_encoding: bool


class AblationConfig(_Section):
    """Pre-training variants run through the same fine-tuning (`a2mae ablate`)."""

    pretrain_steps: int = Field(ge=1, description="Pre-training steps per variant.")
    variants: list[AblationVariant] = Field(min_length=1)


class FinetuneConfig(_Section):
    """Downstream fine-tuning."""

    task: str = Field(
        description="Downstream task, a registered one (a2mae.tasks: scene classification, segmentation, "
        "change detection); the model is registered as model_prefix + task, e.g. a2mae-classification."
    )
    protocol: FinetuneProtocol = Field(
        description="linear_probe: frozen encoder, train the head only; full: train encoder and head."
    )
    encoder: str = Field(description="models:/NAME@ALIAS, models:/NAME/VERSION, a checkpoint, or scratch.")
    epochs: int = Field(ge=1, description="Passes over the training split.")
    batch_size: int = Field(ge=1, description="Samples per optimizer step.")
    lr: float = Field(gt=0, description="Peak learning rate (after warm-up).")
    layer_decay: float = Field(gt=0, le=1)
    seed: int
    datasets: dict[str, str | None] = Field(
        description="Default dataset folder per task (keys: registered tasks; --data wins; null: none)."
    )
    label_mode: Literal["auto", "single", "multi"]
    sensor: str = Field(description="Sensor id of the chips when the GeoTIFFs do not say.")
    bands: list[str] | None = Field(description="Band ids in file order; None: GeoTIFF band descriptions.")
    normalization: Literal["auto", "dataset", "encoder"] = Field(
        description="auto: a pre-trained encoder's pre-training statistics, a scratch encoder's the train "
        "split's; dataset: per-band mean/std of the train split; encoder: the pre-training statistics "
        "(an error when the encoder has none for the chips' bands)."
    )
    max_steps: int | None = Field(ge=1, description="Cap on optimizer steps (None: epochs only).")
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(ge=0, lt=1)
    decoder_channels: int = Field(ge=8, description="Width of the FPN/UPerNet-style decoder.")
    ignore_index: int = Field(ge=0, le=255, description="Mask value excluded from loss and metrics.")
    experiment: str
    model_prefix: str = Field(description="Registered model name is <prefix><task>.")
    serialization: Literal["safetensors"] = Field(
        description="Fine-tuned model format in MLflow: safetensors + spec.json behind a pyfunc (no pickle)."
    )
    output: str = Field(description="Folder of reports and confusion matrices.")
    compare_protocols: list[FinetuneProtocol] = Field(min_length=1)
    ablation: AblationConfig


# ---------------------------------------------------------------------------------------- benchmark
BenchmarkFormat = Literal["auto", "eurosat", "bigearthnet", "oscd", "change-pair", "vector", "finetune"]
BenchmarkBaseline = Literal["scratch", "rcf", "mae"]
BenchmarkProtocol = Literal["knn", "linear"]  # "finetune" (label fractions through a2mae finetune): not yet
DenseLabels = Literal["pixel", "token"]


class BenchmarkConfig(_Section):
    """`a2mae benchmark`: frozen and fine-tuning probes of encoders against baselines (docs/benchmark.md)."""

    format: BenchmarkFormat = Field(description="Layout of the labelled data (auto: detected).")
    encoders: list[str] = Field(
        min_length=1,
        description="Encoders under test: models:/NAME@ALIAS, models:/NAME/N, a checkpoint, @champion.",
    )
    baselines: list[BenchmarkBaseline] = Field(description="Baseline arms.")
    protocols: list[BenchmarkProtocol] = Field(min_length=1, description="Probing protocols.")
    fractions: list[float] = Field(min_length=1, description="Label fractions of the training split.")
    seeds: int = Field(ge=1, le=100, description="Seeds (splits and sampling; fine-tuning: training).")
    dense_labels: DenseLabels = Field(description="Dense probes per labelled pixel, or per token (majority).")
    max_pixels_per_class: int = Field(ge=1, description="Dense probes: labelled pixels per class and split.")
    block_m: float = Field(gt=0, description="Spatial block side, metres (folds, block bootstrap).")
    fold_fractions: list[float] = Field(min_length=3, max_length=3, description="Train/val/test shares.")
    chip_size: int = Field(ge=8, le=2048, multiple_of=8, description="Side of the chips cut from scenes, px.")
    normalization: Literal["encoder", "dataset"] = Field(
        description="Encoder arms: pre-training statistics (encoder) or the data's (dataset)."
    )
    sensor: str | None = Field(description="Sensor id of the rasters (null: detected).")
    bands: list[str] | None = Field(description="Band ids in file order (null: band descriptions).")
    knn_k: list[int] = Field(min_length=1, description="Neighbours of the kNN probe.")
    linear_c: list[float] = Field(
        min_length=1, description="Inverse regularisation grid of the linear probe."
    )
    rcf_features: int = Field(ge=2, multiple_of=2, description="RCF features.")
    rcf_modes: list[Literal["gaussian", "empirical"]] = Field(min_length=1, description="RCF filter kinds.")
    mae_steps: int = Field(ge=1, description="Pre-training steps of the plain-MAE control.")
    mae_snapshot: str = Field(description="Snapshot the plain MAE is pre-trained on.")
    n_boot: int = Field(ge=10, le=100000, description="Bootstrap replicates.")
    batch_size: int = Field(ge=1, description="Chips per embedding forward pass.")
    cache: str = Field(description="Embedding cache folder.")
    experiment: str = Field(min_length=1, description="MLflow experiment of benchmark runs.")
    output: str = Field(description="Default output folder.")

    @model_validator(mode="after")
    def _check(self) -> BenchmarkConfig:
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError("fractions must lie in (0, 1]")
        if abs(sum(self.fold_fractions) - 1) > 1e-6 or min(self.fold_fractions) <= 0:
            raise ValueError("fold_fractions must be three positive shares summing to 1")
        return self


class PrimaryMetrics(_Section):
    """Metric deciding promotion, per kind of task."""

    single_label: Literal["oa", "macro_f1"]
    multi_label: Literal["map", "macro_f1"]
    segmentation: Literal["miou", "oa", "macro_f1"]
    change_detection: Literal["change_f1", "change_iou"]


class EvaluateConfig(_Section):
    """Challenger vs champion evaluation."""

    promotion_margin: float = Field(
        ge=0, description="The challenger's primary metric must beat the champion's by at least this."
    )
    split: str = Field(min_length=1, description="Frozen evaluation split of the version's dataset.")
    batch_size: int = Field(ge=1)
    challenger_alias: str = Field(min_length=1)
    experiment: str = Field(min_length=1, description="MLflow experiment of the evaluation runs.")
    primary_metric: PrimaryMetrics


class PredictConfig(_Section):
    """Applying a registered model to imagery (`a2mae predict`, the predict flow, the model server)."""

    model: str = Field(min_length=1, description="models:/NAME@ALIAS or models:/NAME/VERSION.")
    window: int = Field(ge=8, le=4096, description="Window side in pixels of the scene grid.")
    overlap: int = Field(ge=0, le=2048, description="Pixels shared by neighbouring windows (<= window/2).")
    batch_size: int = Field(ge=1, le=4096, description="Windows per forward pass.")
    executor: Literal["local", "ray"] = Field(description="Local processes or Ray Data actors.")
    workers: int = Field(ge=1, le=1024, description="Local worker processes or Ray actors.")
    ray_address: str | None = Field(description="Ray cluster address (None: $RAY_ADDRESS or a local Ray).")
    probabilities: bool = Field(description="Also write per-class probabilities (dense tasks).")
    dense_embeddings: bool = Field(description="Also write the dense embedding COG (embeddings).")
    output: str = Field(min_length=1, description="Output folder or s3:// prefix of the predict flow.")
    aoi: list[str] = Field(description="Scenes the flow re-runs when a new champion is promoted.")
    gdal_cache_mb: int = Field(ge=8, le=65536, description="GDAL block cache per process, MB.")
    serve_port: int = Field(ge=1, le=65535, description="Port of the champion's HTTP scoring server.")

    @model_validator(mode="after")
    def _overlap_fits(self) -> PredictConfig:
        if 2 * self.overlap > self.window:
            raise ValueError(f"overlap {self.overlap} must be at most half the window {self.window}")
        return self


class EvidenceConfig(_Section):
    """`make evidence`: what the evidence run pre-trains on, with which budget, and what it measures."""

    corpus: list[str] = Field(min_length=1, description="Folders of real scenes pre-trained on (ingested).")
    sets: dict[str, str] = Field(
        min_length=1, description="Real labelled sets benchmarked: name -> folder (layout detected)."
    )
    pretrain_steps: int = Field(ge=1, description="Pre-training steps of A²-MAE and of the plain MAE.")
    seeds: int = Field(ge=1, description="Seeds of every probe.")
    quick_steps: int = Field(ge=1, description="QUICK=1: pre-training steps.")
    quick_seeds: int = Field(ge=1, description="QUICK=1: seeds.")
    quick_sets: list[str] = Field(min_length=1, description="QUICK=1: the sets benchmarked (names of sets).")
    baselines: list[str] = Field(description="Arms beside the encoder: scratch, rcf, mae.")
    protocols: list[str] = Field(
        min_length=1, description="Probes: knn, linear (finetune where time allows)."
    )
    report: str = Field(min_length=1, description="The markdown file the full run writes (QUICK: in --out).")
    figure: str = Field(min_length=1, description="The figure the full run writes beside the report.")


class RegistryConfig(_Section):
    """MLflow tracking and model registry."""

    tracking_uri: str
    encoder_model: str
    champion_alias: str


#: Set for the flow runs of the services' deployments: the folders (``os.pathsep``-separated) that
#: every local path they are given must lie in (``infra.data_roots`` and the services' workspace).
DATA_ROOTS_ENV = "A2MAE_DATA_ROOTS"


class InfraConfig(_Section):
    """Local services started by infra/."""

    home: str
    host: str = Field(min_length=1, description="Interface the services bind (loopback unless allow_remote).")
    allow_remote: bool = Field(
        description="Allow an infra.host beyond loopback; every service then requires credentials."
    )
    auth: bool = Field(description="MLflow basic auth and Prefect's auth string also on loopback.")
    prefect_port: int = Field(ge=1, le=65535)
    mlflow_port: int = Field(ge=1, le=65535)
    s3_port: int = Field(ge=1, le=65535)
    stac: bool = Field(
        description="Start the local STAC API (PostgreSQL + stac-fastapi-pgstac) with the stack."
    )
    stac_port: int = Field(ge=1, le=65535, description="Port of the local STAC API.")
    stac_venv: str = Field(description="The STAC server's venv (built by scripts/bootstrap-stac.sh).")
    ray_port: int = Field(ge=1, le=65535)
    retrain_cron: str = Field(description="Cron expression of the scheduled retraining.")
    timezone: str = Field(description="Timezone of retrain_cron (IANA name).")
    watch_uri: str = Field(description="Folder or s3:// prefix listed by the new-imagery watcher.")
    watch_stac: bool = Field(
        description="The watcher searches the STAC API of `collect` (new items over its locations) instead."
    )
    watch_interval_s: int = Field(ge=5, description="Seconds between two listings of watch_uri.")
    watch_settle_polls: int = Field(
        ge=0,
        description="Listings a new scene must stay unchanged in before it is announced (uploads in "
        "progress wait; 0: announce at first sight).",
    )
    retrain_after_s: int = Field(ge=0, description="Delay between a new-scene event and its retrain run.")
    accelerator_limit: str = Field(min_length=1, description="Global concurrency limit of training tasks.")
    accelerator_slots: int = Field(ge=1, description="Trainings allowed on one machine at once.")
    dvc_remote: DvcRemote = Field(
        description="DVC remote the services push snapshots to (their workspace's default remote); "
        "runs without the services use local."
    )
    buckets: list[str] = Field(description="Buckets created in the S3 store at start.")
    mlflow_artifacts: str = Field(description="Artifact store behind the MLflow server (s3:// or a folder).")
    ray_num_cpus: int | None = Field(ge=1, description="CPUs offered by the Ray head (None: all).")
    ray_dashboard: bool = Field(description="Start the Ray dashboard (the state API Ray Train polls).")
    start_timeout_s: float = Field(gt=0, description="Seconds a service may take to become healthy.")
    data_roots: list[str] = Field(
        description="Local folders the deployments may read and write besides their workspace; a local "
        "path outside them given to a deployment is refused (relative: from the checkout)."
    )


class Params(_Section):
    """All parameters, one section per pipeline stage."""

    data: DataConfig
    collect: CollectConfig
    tile: TileConfig
    model: ModelConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    benchmark: BenchmarkConfig
    evaluate: EvaluateConfig
    predict: PredictConfig
    evidence: EvidenceConfig
    registry: RegistryConfig
    infra: InfraConfig


# ------------------------------------------------------------------------------- checks across sections
#: A check of the parameters that needs more than one section, or a registry of a layer above this one
#: (the model variants, the tasks). Each is written once, in the layer that owns its rule, registered
#: there at import (:func:`register_check`), and run once by :func:`validate_params`: the CLI and the
#: flows import those layers before they load parameters.
ParamsCheck = Callable[["Params"], None]
_CHECKS: list[ParamsCheck] = []


def register_check(check: ParamsCheck) -> ParamsCheck:
    """Run ``check(params)`` whenever parameters are validated; it raises an ``A2maeError`` (one line)."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


# ------------------------------------------------------------------------------------------ loading
def default_params_path() -> Path:
    """The defaults file: the repository's params.yaml, or the copy shipped in the wheel."""
    return _REPO_PARAMS if _REPO_PARAMS.is_file() else _PACKAGED_PARAMS


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = load_file(path)
    except YamlError as err:
        raise ConfigError(str(err)) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, tile, model, ...)")
    return doc


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, f"{prefix}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into a key path and a YAML-parsed value.

    Raises:
        ConfigError: The item has no ``=`` or an empty key.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected section.key=value")
    try:
        value = load_text(raw, f"--set {key.strip()}") if raw.strip() else None
    except YamlError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(doc: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return ``doc`` with ``key=value`` overrides applied (keys must exist in the defaults)."""
    out = copy.deepcopy(doc)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: unknown key {'.'.join(path[: i + 1])}")
            node = node[part]
        if path[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {'.'.join(path)}")
        node[path[-1]] = value
    return out


def _format_error(err: ValidationError, source: str, doc: Mapping[str, Any]) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against params.yaml)"
    elif first["type"] == "missing":
        msg = "missing key"
    else:
        got = first.get("input")
        if not isinstance(got, dict | list):
            msg = f"{msg} (got {got!r})"
    return f"{source}: {loc}: {msg}"


def validate_params(doc: Mapping[str, Any], source: str = "params") -> Params:
    """Validate a parameter mapping.

    Raises:
        ConfigError: One line naming the first bad key. A2maeError: A check across sections failed
            (:func:`register_check`), e.g. ``ModelConfigError`` for a chip size the patch does not divide.
    """
    try:
        params = Params.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, doc)) from None
    for check in _CHECKS:
        check(params)
    return params


def load_params(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Params:
    """Load and validate parameters.

    Args:
        path: Optional user parameter file; it may hold only the keys it changes. When it is a full
            file (e.g. the repository's params.yaml) it simply replaces the defaults.
        overrides: ``section.key=value`` items applied last (values parsed as YAML).

    Returns:
        The validated parameters.

    Raises:
        ConfigError: A file is missing or malformed, or a value is invalid.
    """
    default_path = default_params_path()
    doc = _read_yaml(default_path)
    source = str(default_path.name)
    if path is not None:
        user = _read_yaml(Path(path))
        unknown = [k for k in user if k not in doc]
        if unknown:
            raise ConfigError(f"{path}: {unknown[0]}: unknown section (known: {', '.join(doc)})")
        doc = _deep_merge(doc, user)
        source = str(path)
    doc = apply_overrides(doc, overrides)
    if overrides:
        source = f"{source} + --set"
    return validate_params(doc, source)


def params_to_flat(params: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Flatten to ``{"section.key": value}`` (e.g. for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in params.model_dump(mode="json").items():
        _flatten(f"{prefix}{key}", value, out)
    return out


def _flatten(key: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{key}.{k}", v, out)
    else:
        out[key] = value
