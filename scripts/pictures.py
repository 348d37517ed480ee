#!/usr/bin/env python
"""Make the README's pictures (docs/img/*.png) from a run of the demo.

Usage::

    .venv/bin/python scripts/pictures.py [--demo-output DIR] [--out docs/img]

Reuses the demo output ``DIR`` (default ``demo-output``) when it holds a finished demo, else runs
``python -m flows.demo --out DIR`` first (minutes). It never changes that folder: it works on copies of
the demo's stores (MLflow's SQLite file, Prefect's home) in a temporary folder, where it

1. fine-tunes a segmentation head on the demo's encoder (``a2mae finetune --task segmentation`` on the
   bundled Sentinel-2 SCL chips, a few steps) and applies it to the real Sentinel-2 L2A sample scene
   (``a2mae predict``): the class-map COG is drawn beside the scene in true colour (matplotlib);
2. starts ``mlflow ui`` and a Prefect server over the copies on free loopback ports (the commands of
   :func:`flows.demo.ui_commands`), registers the pipeline deployment with that server (its custom-run
   form) and takes screenshots with headless Chromium (``scripts/bootstrap-browser.sh`` installs it and
   playwright-core): the run form, the demo's finished flow run, the pre-training run in MLflow;
3. copies the last reconstruction figure the pre-training run logged to MLflow.

Every process it starts is stopped at the end, also on an error or Ctrl-C. Each PNG is kept under
``--max-kb`` (palette-quantised when larger). A missing piece is one line naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `flows` and `a2mae` come from this checkout
    sys.path.insert(0, str(REPO))

#: The pictures, in the order the README shows them.
PICTURES = {
    "form": "prefect-run-form.png",
    "flow_run": "prefect-flow-run.png",
    "mlflow_run": "mlflow-pretrain-run.png",
    "reconstruction": "reconstruction.png",
    "map": "predicted-map.png",
}
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = (1280, 800)
SCENE = REPO / "data" / "samples" / "sentinel2_l2a_T29RKH_20200219"
SCENE_RGB = ("B04.tif", "B03.tif", "B02.tif")
SEGMENTATION_DATA = REPO / "data" / "samples" / "segmentation"
#: Fine-tuning budget of the segmentation head drawn on the map (the demo's own budget is 20 steps).
SEGMENTATION_SETS = ("finetune.max_steps=60", "finetune.epochs=30", "finetune.experiment=a2mae-pictures")
MAP_FIGSIZE, MAP_DPI = (10.0, 5.0), 100
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PicturesError(Exception):
    """Something the pictures need is missing or failed; the message is one line."""


# ------------------------------------------------------------------------------- predicted-map figure
def read_class_map(path: Path) -> tuple[Any, list[str], dict[int, tuple[int, int, int, int]]]:
    """A class-map GeoTIFF: ``(classes [H, W] uint8, class names, colour table)``.

    Names come from the ``A2MAE_CLASS_NAMES`` tag (``class N`` without it); colours from the colour
    table of band 1 (matplotlib's tab10 without one). Value 255 is nodata.
    """
    import numpy as np
    import rasterio
    from matplotlib import colormaps

    with rasterio.open(path) as ds:
        classes = ds.read(1)
        tags = ds.tags()
        try:
            table = dict(ds.colormap(1))
        except ValueError:
            table = {}
    valid = classes[classes != 255]
    names = json.loads(tags["A2MAE_CLASS_NAMES"]) if "A2MAE_CLASS_NAMES" in tags else []
    n = max(len(names), int(valid.max(initial=0)) + 1 if valid.size else 1)
    names = [*names, *(f"class {i}" for i in range(len(names), n))]
    tab = colormaps["tab10"]
    colours = {i: table.get(i) or (*(int(255 * c) for c in tab(i % 10)[:3]), 255) for i in range(len(names))}
    return np.asarray(classes), names, colours


def read_true_colour(files: Sequence[Path], shape: tuple[int, int]) -> Any:
    """Red, green and blue band files read onto ``shape`` (bilinear), stretched 2-98 %: ``[H, W, 3]``."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling

    bands = []
    for f in files:
        with rasterio.open(f) as ds:
            bands.append(ds.read(1, out_shape=shape, resampling=Resampling.bilinear).astype("float32"))
    rgb = np.stack(bands, axis=-1)
    lo, hi = np.percentile(rgb, 2, axis=(0, 1)), np.percentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)


def render_class_map(classmap: Path, dst: Path, rgb_files: Sequence[Path] = (), title: str = "") -> Path:
    """Draw a class map (and the scene in true colour beside it) into a PNG of ``MAP_FIGSIZE x MAP_DPI``.

    Args:
        classmap: A class-map GeoTIFF of ``a2mae predict`` (uint8 classes, nodata 255, colour table).
        dst: The PNG to write (atomically).
        rgb_files: Red, green, blue single-band rasters of the scene (none: the map alone).
        title: Figure title.

    Returns:
        ``dst``.
    """
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from a2mae.io.atomic import atomic_path

    classes, names, colours = read_class_map(classmap)
    lut = np.zeros((256, 4), np.uint8)
    for i, c in colours.items():
        lut[i] = c
    fig = Figure(figsize=MAP_FIGSIZE, dpi=MAP_DPI, layout="constrained")
    axes = fig.subplots(1, 2 if rgb_files else 1, squeeze=False)[0]
    if rgb_files:
        axes[0].imshow(read_true_colour(rgb_files, classes.shape), interpolation="nearest")
        axes[0].set_title("scene (true colour)")
    axes[-1].imshow(lut[classes], interpolation="nearest")
    axes[-1].set_title("predicted classes")
    handles = [Patch(color=np.array(colours[i][:3]) / 255, label=name) for i, name in enumerate(names)]
    axes[-1].legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.85)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or classmap.name)
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, format="png", dpi=MAP_DPI)
    return dst


def shrink_png(path: Path, max_bytes: int) -> int:
    """Re-encode ``path`` with a 256-colour palette when it is larger than ``max_bytes``; its new size."""
    from PIL import Image

    from a2mae.io.atomic import atomic_path

    if path.stat().st_size > max_bytes:
        with Image.open(path) as im:
            small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        with atomic_path(path) as tmp:
            small.save(tmp, format="PNG", optimize=True)
    return path.stat().st_size


# ----------------------------------------------------------------------------------------- processes
class Processes:
    """The services this script starts: each in its own process group, all stopped on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], ready_url: str, timeout: float) -> None:
        """Start ``argv`` and wait until ``ready_url`` answers 200.

        Raises:
            PicturesError: It exits or does not answer in time (the message names its log).
        """
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.procs.append((name, proc))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PicturesError(f"{name} exited with code {proc.returncode} while starting; see {log}")
            with contextlib.suppress(OSError, ValueError), _OPENER.open(ready_url, timeout=2) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.5)
        raise PicturesError(f"{name} did not answer at {ready_url} within {timeout:g} s; see {log}")

    def stop(self) -> None:
        """SIGTERM every process group started here, then SIGKILL what is left after 15 s."""
        for _, proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_step(what: str, argv: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a command to its end, its output into ``log``; returns its stdout.

    Raises:
        PicturesError: It failed (the message gives its last line and the log).
    """
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, check=False)
    log.write_text(f"$ {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise PicturesError(f"{what} failed: {last[:300]} (see {log})")
    return proc.stdout


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the checkout importable first, plus ``extra``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


# ---------------------------------------------------------------------------------------- the steps
def check_browser() -> Path:
    """``node_modules/playwright-core``, after checking Chromium and Node are there.

    Raises:
        PicturesError: One of them is missing (run ``scripts/bootstrap-browser.sh``).
    """
    core = REPO / "node_modules" / "playwright-core"
    if not Path(CHROMIUM).exists():
        raise PicturesError(f"chromium is not installed ({CHROMIUM}): run scripts/bootstrap-browser.sh")
    if shutil.which("node") is None:
        raise PicturesError(
            "node is not installed: install Node.js 18+, then run scripts/bootstrap-browser.sh"
        )
    if not (core / "package.json").is_file():
        raise PicturesError(f"playwright-core is not installed ({core}): run scripts/bootstrap-browser.sh")
    return core


def ensure_demo(out: Path) -> Path:
    """``out`` holding a finished demo (MLflow store and Prefect home), running the demo when it does not."""
    if not _demo_done(out):
        print(f"pictures: running the demo into {out} (minutes)", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "flows.demo", "--out", str(out)], env=child_env(), check=False
        )
        if proc.returncode != 0 or not _demo_done(out):
            raise PicturesError(
                f"the demo did not finish (python -m flows.demo --out {out}; see {out / 'demo.log'})"
            )
    return out.resolve()


def _demo_done(out: Path) -> bool:
    return (out / "workspace" / "mlruns.db").is_file() and (out / "prefect" / "prefect.db").is_file()


def copy_stores(demo: Path, scratch: Path) -> Path:
    """Copies of the demo's MLflow database and Prefect home under ``scratch`` (the demo's layout)."""
    (scratch / "workspace").mkdir(parents=True)
    shutil.copy2(demo / "workspace" / "mlruns.db", scratch / "workspace" / "mlruns.db")
    shutil.copytree(demo / "prefect", scratch / "prefect", ignore=shutil.ignore_patterns("*.log", "logs"))
    return scratch


def predicted_map(scratch: Path, dst: Path) -> Path:
    """Fine-tune a segmentation head on the demo's encoder, apply it to the S2 L2A sample, draw the map."""
    import rasterio

    store = f"sqlite:///{scratch / 'workspace' / 'mlruns.db'}"
    env = child_env(MLFLOW_TRACKING_URI=store, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    a2mae = [sys.executable, "-m", "a2mae"]
    sets = [x for s in SEGMENTATION_SETS for x in ("--set", s)]
    print("pictures: fine-tuning a segmentation head and predicting a class map (about a minute)", flush=True)
    run_step(
        "a2mae finetune --task segmentation",
        [
            *a2mae,
            "finetune",
            "--task",
            "segmentation",
            "--data",
            str(SEGMENTATION_DATA),
            *sets,
            "--no-progress",
        ],
        scratch / "finetune.log",
        cwd=scratch,
        env=env,
    )
    out = scratch / "predict"
    model = "models:/a2mae-segmentation@challenger"
    run_step(
        "a2mae predict",
        [*a2mae, "predict", str(SCENE), "--model", model, "--out", str(out), "--no-progress"],
        scratch / "predict.log",
        cwd=scratch,
        env=env,
    )
    maps = sorted(out.glob("*/classmap.tif"))
    if not maps:
        raise PicturesError(f"a2mae predict wrote no classmap.tif under {out}")
    with rasterio.open(maps[0]) as ds:
        tags = ds.tags()
    name, version = tags.get("A2MAE_MODEL_NAME", "a2mae-segmentation"), tags.get("A2MAE_MODEL_VERSION", "?")
    title = f"Sentinel-2 L2A sample {SCENE.name.split('_', 2)[-1]}: {name} v{version} (a2mae predict)"
    return render_class_map(maps[0], dst, [SCENE / f for f in SCENE_RGB], title=title)


def start_uis(scratch: Path, procs: Processes) -> tuple[str, str]:
    """``mlflow ui`` and ``prefect server start`` over the copies; returns their base URLs."""
    from flows.demo import ui_commands

    mlflow, prefect = ui_commands(scratch)
    print(f"pictures: starting mlflow ui ({mlflow.url}) and the Prefect server ({prefect.url})", flush=True)
    for name, cmd, ready, timeout in (
        ("mlflow", mlflow, f"{mlflow.url}/health", 120.0),
        ("prefect", prefect, f"{prefect.url}/api/health", 240.0),
    ):
        env = {k: v for k, v in child_env(**cmd.env).items() if k not in cmd.unset}
        procs.start(name, cmd.argv, env, ready, timeout)
    return mlflow.url, prefect.url


def register_pipeline(api: str, workspace: Path) -> str:
    """Register the pipeline deployment (its custom-run form) with the server at ``api``; returns its id.

    It runs nowhere (no worker): only its form is shown.
    """
    from a2mae.services.flows import PIPELINE_DEPLOYMENT

    os.environ["PREFECT_API_URL"] = api  # before Prefect reads its settings (imported below)
    os.environ["PREFECT_HOME"] = str(workspace.parent / "prefect")
    from flows.serve import build_deployments

    name = PIPELINE_DEPLOYMENT.split("/", 1)[1]
    (pipeline,) = (d for d in build_deployments(workspace) if d.name == name)
    return str(pipeline.apply())


def api_json(url: str, body: dict | None = None) -> Any:
    """``GET`` (or ``POST`` of ``body`` as JSON) ``url``; the decoded JSON answer.

    Raises:
        PicturesError: No answer or not 200.
    """
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=30) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError) as err:
        raise PicturesError(f"{url.split('?')[0]}: {err}") from None


def latest_flow_run(api: str, flow: str = "retrain") -> str:
    """Id of the last completed run of ``flow`` on the Prefect server (the demo's pipeline run)."""
    body = {
        "flows": {"name": {"any_": [flow]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "sort": "START_TIME_DESC",
        "limit": 1,
    }
    runs = api_json(f"{api}/flow_runs/filter", body)
    if not runs:
        raise PicturesError(f"no completed '{flow}' flow run in the demo's Prefect database")
    return runs[0]["id"]


def pretrain_run(mlflow_url: str, experiment: str = "a2mae-pretrain") -> tuple[str, str, str]:
    """``(experiment id, run id, run name)`` of the last finished pre-training run in MLflow."""
    api = f"{mlflow_url}/api/2.0/mlflow"
    got = api_json(f"{api}/experiments/get-by-name?experiment_name={urllib.parse.quote(experiment)}")
    exp = got["experiment"]["experiment_id"]
    body = {"experiment_ids": [exp], "filter": "attributes.status = 'FINISHED'", "max_results": 1}
    runs = api_json(f"{api}/runs/search", {**body, "order_by": ["attributes.start_time DESC"]}).get(
        "runs", []
    )
    if not runs:
        raise PicturesError(f"no finished run in the MLflow experiment {experiment}")
    info = runs[0]["info"]
    return exp, info["run_id"], info["run_name"]


def reconstruction(mlflow_url: str, run_id: str, dst: Path, sensors: Sequence[str] = ("S2", "L8")) -> Path:
    """The last reconstruction figure the run logged (``reconstructions/step_N_SENSOR.png``), to ``dst``.

    The first of ``sensors`` present wins (true colour), else any sensor.
    """
    from a2mae.io.atomic import atomic_write_bytes

    query = urllib.parse.urlencode({"run_id": run_id, "path": "reconstructions"})
    files = [
        f["path"] for f in api_json(f"{mlflow_url}/api/2.0/mlflow/artifacts/list?{query}").get("files", [])
    ]
    pngs = sorted(f for f in files if f.endswith(".png"))
    if not pngs:
        raise PicturesError(f"the pre-training run {run_id} logged no reconstruction figure")
    last = max(Path(f).name.split("_")[1] for f in pngs)
    at_last = [f for f in pngs if Path(f).name.split("_")[1] == last]
    chosen = next((f for s in sensors for f in at_last if f.endswith(f"_{s}.png")), at_last[0])
    query = urllib.parse.urlencode({"path": chosen, "run_uuid": run_id})
    try:
        with _OPENER.open(f"{mlflow_url}/get-artifact?{query}", timeout=30) as resp:
            atomic_write_bytes(dst, resp.read())
    except OSError as err:
        raise PicturesError(f"cannot read the artifact {chosen} from MLflow: {err}") from None
    return dst


# Screenshots of pages, one Chromium for all. A job: {url, shot, kind, ...}. Kind "form" opens the
# deployment's Run -> Custom run form and scrolls to the section titled job.section; "prefect" waits for
# the flow run's state badge; "mlflow" sets the UI's local storage (job.storage: the model-training view,
# the assistant panel closed) and waits for the run's name (job.expect).
SCREENSHOT_JS = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const jobs = JSON.parse(process.env.JOBS);
// Best effort: a page that polls (MLflow's auto-refresh) may never be idle; each job waits for its proof.
const settle = page => page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM, args: JSON.parse(process.env.FLAGS),
  });
  try {
    for (const job of jobs) {
      const page = await browser.newPage({ viewport: { width: job.width, height: job.height } });
      page.setDefaultTimeout(90000);
      if (job.storage) {
        await page.addInitScript(
          s => { for (const [k, v] of Object.entries(s)) localStorage.setItem(k, v); }, job.storage);
      }
      await page.goto(job.url, { waitUntil: 'load' });
      await settle(page);
      if (job.kind === 'form') {
        await page.getByRole('button', { name: 'Run', exact: true }).click();
        await page.getByText('Custom run', { exact: true }).click();
        await page.waitForURL(/\/run(\?|$)/);
        const section = page.locator('.schema-form-property__label', { hasText: job.section }).first();
        await section.waitFor();
        await settle(page);
        await section.evaluate(e => e.scrollIntoView({ block: 'start' }));
        await page.mouse.wheel(0, -80);  // a little of the section above
      } else if (job.kind === 'prefect') {
        await page.locator('.state-badge').first().waitFor();
      } else if (job.kind === 'mlflow') {
        await page.getByText(job.expect, { exact: true }).first().waitFor();
      }
      await page.waitForTimeout(1500);  // charts, graphs and scrolling settle
      await page.screenshot({ path: job.shot });
      await page.close();
      console.log(JSON.stringify({ shot: job.shot }));
    }
  } finally {
    await browser.close();
  }
})().catch(e => { console.error(String(e).split('\n')[0]); process.exit(1); });
"""
#: MLflow UI local storage: the "Model training" view, the assistant panel closed.
MLFLOW_STORAGE = {
    "mlflow.workflowType_v1": '"machine_learning"',
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def screenshots(jobs: list[dict[str, Any]], core: Path, scratch: Path) -> None:
    """Take the screenshots of ``jobs`` with headless Chromium (one browser, one page each)."""
    script = scratch / "shots.js"
    script.write_text(SCREENSHOT_JS)
    width, height = VIEWPORT
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "PLAYWRIGHT_CORE": str(core),
        "CHROMIUM": CHROMIUM,
        "FLAGS": json.dumps(CHROMIUM_FLAGS),
        "JOBS": json.dumps([{"width": width, "height": height, **job} for job in jobs]),
    }
    print(f"pictures: {len(jobs)} screenshots with headless Chromium", flush=True)
    run_step(
        "the screenshots (node + playwright-core + chromium)",
        ["node", str(script)],
        scratch / "shots.log",
        env=env,
    )


# ---------------------------------------------------------------------------------------------- main
def make_pictures(demo: Path, out: Path, core: Path, scratch: Path, max_bytes: int) -> list[Path]:
    """Every picture of :data:`PICTURES` into ``out``, from the demo output ``demo``.

    They are made in ``scratch`` and copied into ``out`` only when all of them are there, each at most
    ``max_bytes`` (:func:`shrink_png`) and readable by everyone.
    """
    copy_stores(demo, scratch)
    staged = scratch / "img"
    staged.mkdir()
    predicted_map(scratch, staged / PICTURES["map"])
    with Processes(scratch) as procs:
        mlflow_url, prefect_url = start_uis(scratch, procs)
        deployment = register_pipeline(f"{prefect_url}/api", scratch / "workspace")
        flow_run = latest_flow_run(f"{prefect_url}/api")
        exp, run_id, run_name = pretrain_run(mlflow_url)
        reconstruction(mlflow_url, run_id, staged / PICTURES["reconstruction"])
        shot = {key: str(staged / PICTURES[key]) for key in ("form", "flow_run", "mlflow_run")}
        jobs = [
            {
                "kind": "form",
                "url": f"{prefect_url}/deployments/deployment/{deployment}",
                "section": "4. Pre-train",
            },
            {"kind": "prefect", "url": f"{prefect_url}/runs/flow-run/{flow_run}"},
            {"kind": "mlflow", "url": f"{mlflow_url}/#/experiments/{exp}/runs/{run_id}", "expect": run_name},
        ]
        jobs[2]["storage"] = MLFLOW_STORAGE
        for job, key in zip(jobs, shot, strict=True):
            job["shot"] = shot[key]
        screenshots(jobs, core, scratch)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name in PICTURES.values():
        shrink_png(staged / name, max_bytes)
        shutil.copyfile(staged / name, out / name)
        (out / name).chmod(0o644)  # made as private temporary files (0600)
        done.append(out / name)
    return done


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so that the same clean-up runs as for Ctrl-C."""

    def raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, make the pictures; returns the exit code."""
    ap = argparse.ArgumentParser(prog="scripts/pictures.py", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--demo-output", type=Path, default=REPO / "demo-output", help="Demo output to reuse or make."
    )
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="Folder of the PNGs.")
    ap.add_argument(
        "--max-kb", type=int, default=300, help="Largest PNG, KB (larger ones are palette-quantised)."
    )
    ap.add_argument("--keep-scratch", action="store_true", help="Keep the temporary folder (logs, copies).")
    args = ap.parse_args(argv)
    scratch: Path | None = None
    try:
        with interrupt_on_sigterm():
            core = check_browser()
            scratch = Path(tempfile.mkdtemp(prefix="a2mae-pictures-"))
            demo = ensure_demo(args.demo_output)
            made = make_pictures(demo, args.out, core, scratch, args.max_kb * 1024)
    except PicturesError as err:
        return _failed(f"error: {err}", scratch, 2)
    except KeyboardInterrupt:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        return _failed("interrupted; the processes it started are stopped", None, 130)
    except Exception as err:  # unexpected: one line all the same
        first = (str(err).strip().splitlines() or [""])[0][:300]
        return _failed(f"failed: {type(err).__name__}: {first}", scratch, 1)
    if args.keep_scratch:
        print(f"pictures: logs and copies kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    for path in made:
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        print(f"  {shown}  {path.stat().st_size / 1024:.0f} KB")
    return 0


def _failed(message: str, scratch: Path | None, code: int) -> int:
    """Print ``message`` as one line (naming the kept scratch folder, where the logs are); ``code``."""
    kept = f" (logs and copies kept in {scratch})" if scratch is not None else ""
    print(f"pictures: {message}{kept}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
