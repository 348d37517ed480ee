"""Shared test settings: services stay on loopback, telemetry off, no network."""

from __future__ import annotations

import contextlib
import os

import pytest

# Before anything imports ray/prefect/mlflow.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


# --------------------------------------------------------------------- synthetic scenes and snapshots


@pytest.fixture(scope="session")
def synthetic_scenes(tmp_path_factory):
    """Co-located synthetic S2 L2A, L8 C2 L2, GF1 and GF2 scenes with their catalog (read-only!).

    Returns ``(folder, records, catalog_path)``; see ``a2mae/testing/scenes.py``.
    """
    from a2mae.ingest.catalog import write_catalog
    from a2mae.testing.scenes import make_scenes

    root = tmp_path_factory.mktemp("synthetic_scenes")
    records = make_scenes(root / "scenes")
    catalog = root / "catalog.parquet"
    write_catalog(records, catalog)
    return root / "scenes", records, catalog


@pytest.fixture(scope="session")
def tiny_snapshot(tmp_path_factory, synthetic_scenes):
    """A small STSSD snapshot tiled from ``synthetic_scenes`` (read-only!): temporal and hires sets."""
    from a2mae.config import load_params
    from a2mae.stssd.run import tile

    out = tmp_path_factory.mktemp("tiny_snapshot") / "stssd"
    tile(synthetic_scenes[2], out, load_params(overrides=["tile.workers=1"]), progress=False)
    return out


# ------------------------------------------------------------------------------ GeoTIFFs and S3 store


@pytest.fixture
def geotiff():
    """Writer of small GeoTIFFs: ``geotiff(path, data, res=10, origin=(500000, 4200000), crs=..., ...)``.

    ``data`` is ``(bands, rows, cols)``; ``crs=None`` or ``transform=False`` write a file without
    that georeferencing; ``tags`` and ``descriptions`` are written when given. Returns the path.
    """
    import warnings

    import numpy as np
    import rasterio
    from affine import Affine

    def write(
        path,
        data,
        res: float = 10.0,
        origin: tuple[float, float] = (500000.0, 4200000.0),
        crs: str | None = "EPSG:32633",
        nodata: float | None = 0,
        tags: dict | None = None,
        descriptions: list[str] | None = None,
        transform=None,
    ):
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        profile = {
            "driver": "GTiff",
            "count": data.shape[0],
            "height": data.shape[1],
            "width": data.shape[2],
            "dtype": data.dtype.name,
            "nodata": nodata,
        }
        if crs is not None:
            profile["crs"] = crs
        if transform is not False:
            profile["transform"] = transform or Affine.translation(*origin) @ Affine.scale(res, -res)
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dst = rasterio.open(path, "w", **profile)
        with dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
            for i, d in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, d)
        return path

    return write


class S3Store:
    """A running SeaweedFS S3 store for tests: endpoint, credentials and a fresh bucket."""

    #: A bucket whose objects anyone may read (plain http:// URLs, as public COG archives serve them).
    PUBLIC_BUCKET = "a2mae-public"

    def __init__(self, server, bucket: str) -> None:
        self.server = server
        self.bucket = bucket
        self.endpoint_url = server.endpoint_url
        self.access_key = server.access_key
        self.secret_key = server.secret_key
        self.region = server.region

    @property
    def uri(self) -> str:
        """``s3://<bucket>`` of the session's bucket."""
        return f"s3://{self.bucket}"

    def settings(self):
        """:class:`a2mae.io.storage.S3Settings` for this store."""
        return self.server.settings()

    def new_bucket(self, prefix: str = "a2mae-t") -> str:
        """Create another empty bucket; returns its ``s3://`` URI."""
        import uuid

        return self.server.create_bucket(f"{prefix}-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    """SeaweedFS on free loopback ports (``weed mini``), with a fresh bucket, for the whole session.

    ``S3Store.PUBLIC_BUCKET`` also exists; its objects can be read unsigned (``http://`` URLs).

    While the fixture is active, ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
    and ``AWS_REGION`` point s3fs, GDAL, DVC and MLflow at it (restored afterwards); the server is
    stopped at the end of the session. Mark tests that use it ``@pytest.mark.s3``.
    """
    import uuid

    from a2mae.services import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), public_buckets=(S3Store.PUBLIC_BUCKET,))
    server.start()
    mp = pytest.MonkeyPatch()
    try:
        bucket = server.create_bucket(f"a2mae-test-{uuid.uuid4().hex[:8]}")[len("s3://") :]
        server.create_bucket(S3Store.PUBLIC_BUCKET)
        for key, value in server.env().items():
            mp.setenv(key, value)
        yield S3Store(server, bucket)
    finally:
        mp.undo()
        server.stop(timeout=5)


# ------------------------------------------------------------------------ downstream: MLflow and data

#: create_model options of a tiny encoder for downstream tests (seconds, not minutes, on 2 cores).
TINY_ENCODER = (
    "pretrain.model_overrides={depth: 2, embed_dim: 32, num_heads: 2, decoder_embed_dim: 32, "
    "decoder_depth: 1, decoder_num_heads: 2, sensors: [S2]}"
)


@pytest.fixture(scope="session")
def _mlflow_empty_db(empty_mlflow_db):
    """An empty, migrated MLflow SQLite store, created once (migrating a new one takes seconds)."""
    return empty_mlflow_db


@pytest.fixture
def mlflow_tmp(tmp_path, monkeypatch, _mlflow_empty_db):
    """A throwaway MLflow store: ``MLFLOW_TRACKING_URI`` = SQLite in ``tmp_path``, artifacts under
    ``tmp_path/mlruns`` (the test runs with ``tmp_path`` as working directory). Returns the URI."""
    import shutil

    import mlflow

    shutil.copyfile(_mlflow_empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("Default")  # forget the active experiment of an earlier test's store
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def downstream_params(tmp_path):
    """``downstream_params(*overrides)``: parameters with a tiny scratch encoder, a few fine-tuning steps,
    outputs under ``tmp_path`` and the given ``section.key=value`` overrides."""
    from a2mae.config import load_params

    def make(*overrides: str):
        base = [
            TINY_ENCODER,
            "finetune.encoder=scratch",
            "finetune.max_steps=2",
            "finetune.batch_size=4",
            "finetune.decoder_channels=16",
            f"finetune.output={tmp_path / 'finetune-out'}",
            "evaluate.batch_size=8",
        ]
        return load_params(None, [*base, *overrides])

    return make


@pytest.fixture
def cls_dataset(tmp_path):
    """``cls_dataset(labels, size=16, classes=None, name="cls")``: a folder of generated S2 chips (10 bands,
    georeferenced) with ``labels.csv``; ``labels`` maps split -> list of label strings (``a|b`` for
    several). Chip brightness depends on the first label, so the task is learnable. Returns the folder."""
    import numpy as np
    from rasterio.transform import from_origin

    from a2mae.finetune.samples import s2_bands, write_chip

    def make(labels: dict[str, list[str]], size: int = 16, classes: list[str] | None = None, name="cls"):
        root = tmp_path / name
        rows = ["image,labels,split"]
        rng = np.random.default_rng(0)
        names = sorted({lab for labs in labels.values() for row in labs for lab in row.split("|")})
        for split, labs in labels.items():
            for i, lab in enumerate(labs):
                level = 1000 + 1500 * names.index(lab.split("|")[0])
                data = (level + rng.integers(0, 200, (10, size, size))).astype(np.uint16)
                t = from_origin(400_000 + 1000 * i, 4_500_000, 10, 10)
                path = root / "chips" / f"{split}_{i}.tif"
                write_chip(path, data, s2_bands(), crs="EPSG:32633", transform=t)
                rows.append(f'chips/{split}_{i}.tif,"{lab}",{split}')
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
        if classes is not None:
            (root / "classes.txt").write_text("\n".join(classes) + "\n")
        return root

    return make


# ------------------------------------------------------------------------------------- pre-training


@pytest.fixture(scope="session")
def pretrain_snapshot(tmp_path_factory):
    """A very small STSSD snapshot for training tests (read-only!): 32-px chips, ~37 train sets of
    S2, L8, GF1 and GF2 images, tiled from half-size synthetic scenes. Returns the folder."""
    from a2mae.config import load_params
    from a2mae.ingest.catalog import write_catalog
    from a2mae.stssd.run import tile
    from a2mae.testing.scenes import default_specs, make_scenes

    root = tmp_path_factory.mktemp("pretrain_snapshot")
    records = make_scenes(root / "scenes", default_specs(0.5))
    write_catalog(records, root / "catalog.parquet")
    params = load_params(overrides=["tile.workers=1", "tile.chip_size=32", "tile.grid_m=320"])
    tile(root / "catalog.parquet", root / "stssd", params, progress=False)
    return root / "stssd"


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory):
    """An initialised, empty MLflow SQLite store (creating one runs MLflow's migrations: seconds).
    Copy it; never write to it."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    here = os.getcwd()
    os.chdir(path.parent)  # MLflow puts the Default experiment's artifacts in ./mlruns of this folder
    try:
        MlflowClient(f"sqlite:///{path}").search_experiments()
    finally:
        os.chdir(here)
    return path


@pytest.fixture
def tiny_pretrain_overrides(tmp_path, empty_mlflow_db):
    """``--set`` overrides for a seconds-long pre-training run: tiny model, in-process, tmp storage and
    a fresh SQLite MLflow store (``tmp_path/mlflow.db``)."""
    import shutil

    shutil.copyfile(empty_mlflow_db, tmp_path / "mlflow.db")
    arch = (
        "{depth: 1, embed_dim: 32, num_heads: 2, decoder_embed_dim: 32, decoder_depth: 1, "
        "decoder_num_heads: 2}"
    )
    return [
        f"pretrain.model_overrides={arch}",
        "pretrain.num_workers=0",
        "pretrain.batch_size=4",
        "pretrain.system_metrics=false",
        "pretrain.log_images_every_steps=0",
        f"pretrain.storage_path={tmp_path / 'runs'}",
        f"registry.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]


# ------------------------------------------------------------------ Prefect and the services of infra/

#: Tiny budget for pipeline runs through the flows (seconds per stage on 2 cores).
TINY_PIPELINE = (
    "pretrain.model_overrides={depth: 1, embed_dim: 32, num_heads: 2, decoder_embed_dim: 32, "
    "decoder_depth: 1, decoder_num_heads: 2}",
    "pretrain.max_steps=3",
    "pretrain.batch_size=4",
    "pretrain.system_metrics=false",
    "pretrain.ray_dashboard=false",
    "pretrain.log_images_every_steps=0",
    "finetune.max_steps=2",
    "finetune.batch_size=4",
    "finetune.decoder_channels=16",
    "evaluate.batch_size=8",
    "tile.workers=1",
)


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (SQLite) for the session, with flow-run heartbeats off (~1 s per run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


class ServicesStack:
    """The real services of infra/ for slow tests: the stack, its checkout and workspace, settings and
    client env."""

    def __init__(self, stack, checkout, sets):
        self.stack = stack
        self.checkout = checkout
        self.sets = sets
        self.env = stack.client_env()

    @property
    def workspace(self):
        """The git + DVC repository the deployments work in (cloned from the checkout by the stack)."""
        return self.stack.workspace

    @property
    def api_url(self) -> str:
        """``PREFECT_API_URL`` of the stack's Prefect server."""
        return self.stack.prefect.api_url

    def set_watcher(self, active: bool) -> None:
        """Resume or pause the watcher deployment's schedule."""
        from prefect import get_client

        from a2mae.services.flows import WATCHER_DEPLOYMENT

        with self.prefect_settings(), get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(WATCHER_DEPLOYMENT)
            (client.resume_deployment if active else client.pause_deployment)(dep.id)

    @contextlib.contextmanager
    def prefect_settings(self):
        """``temporary_settings`` pointing Prefect clients of this process at the stack.

        Prefect keeps one events worker per process, bound to the API of its first event: it is drained
        on the way in and out, so that events reach the API of the settings in force (flows run here
        against the stack, and others against the session's temporary API).
        """
        from prefect.events.worker import EventsWorker
        from prefect.settings import PREFECT_API_URL, temporary_settings

        EventsWorker.drain_all(timeout=30)
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            try:
                yield
            finally:
                EventsWorker.drain_all(timeout=30)


@pytest.fixture(scope="session")
def services_stack(tmp_path_factory):
    """S3 store, MLflow, Prefect server, Ray head and the deployments' server (infra/), on free loopback
    ports, for a fresh git + DVC checkout (the repository's pipeline files and samples) with a tiny
    training budget; the stack clones its own workspace from it. The watcher keeps the defaults of
    params.yaml (its timing is what the watcher test measures) and is paused until a test resumes it.
    Stopped at the end."""
    from a2mae.config import load_params
    from a2mae.services.base import free_port_pair
    from a2mae.services.stack import Stack
    from flows.demo import make_workspace

    root = tmp_path_factory.mktemp("stack")
    checkout = make_workspace(root / "checkout")
    ports = []
    while len(ports) < 4:  # outside Ray's worker range; +10000 free too (SeaweedFS gRPC)
        port = free_port_pair(low=20000, high=30000)
        if port not in ports:
            ports.append(port)
    sets = [
        f"infra.home={root / 'home'}",
        f"infra.prefect_port={ports[0]}",
        f"infra.mlflow_port={ports[1]}",
        f"infra.s3_port={ports[2]}",
        f"infra.ray_port={ports[3]}",
        "infra.ray_num_cpus=2",
        "pretrain.num_workers=0",  # deployments train in-process by default; the e2e test asks for Ray
        "tile.grid_m=20000",
        *TINY_PIPELINE,
    ]
    stack = Stack(load_params(None, sets), checkout, sets)
    try:
        stack.up()
        services = ServicesStack(stack, checkout, sets)
        services.set_watcher(active=False)  # the watcher test switches it on (each run costs CPU)
        yield services
    finally:
        stack.down()
