"""The demo: the whole pipeline (``retrain``) on the real sample scenes, in embedded mode.

``python -m flows.demo [--out demo-output] [--set section.key=value ...]`` builds a small DVC + git
workspace under ``<out>/workspace`` (the repository's ``dvc.yaml``, ``params.yaml`` and DVC config, the
bundled samples), then runs the retrain flow against Prefect's ephemeral API (its database kept in
``<out>/prefect`` so the runs can be browsed afterwards), MLflow on SQLite, a local Ray and the local
DVC remote: ingest of the real sample scenes (``data/samples/``: Sentinel-2 L1C, L2A and a 4-date
surface reflectance series, Landsat-8 L1 and Collection-2 L2, NAIP, and the two-date Sentinel-2 L1C
pairs of four OSCD cities), tiling, a DVC snapshot
(committed to the workspace's git), pre-training, fine-tuning on the BigEarthNet samples, evaluation
and promotion. It ends by printing how many multi-image sets of real imagery the snapshot holds (and
how many of them are multi-date), and
where to look. A second run reuses the workspace: unchanged inputs are cache hits and
training is skipped because the champion was trained on the same snapshot.

It prints one line per stage, one progress bar per long step and the summary, nothing else: what the
libraries say (Prefect, MLflow, Ray, torch, GDAL; their warnings, their workers' lines) goes to
``<out>/demo.log`` (:mod:`a2mae.logs`); ``-v`` also shows their warnings. An unexpected failure is one
line, with its traceback in the log. The MLflow runs link to their Prefect flow runs and the Prefect
artifacts to the MLflow pages, on the ports the closing "where to look" commands use.

The budget (``DEMO_SETTINGS``) keeps it to minutes on 2 CPU cores; ``--set`` changes any of it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2mae import console, logs
from flows.params import SAMPLE_SCENES

REPO = Path(__file__).resolve().parents[1]
#: Files of the repository that make a DVC workspace.
WORKSPACE_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore")
#: The small training budget of the demo (tiling uses params.yaml as it is).
DEMO_SETTINGS = (
    "pretrain.max_steps=20",
    "pretrain.num_workers=1",
    "pretrain.ray_dashboard=false",
    "finetune.max_steps=20",
)


def make_workspace(root: Path, scenes: Sequence[str] = SAMPLE_SCENES, who: str = "demo") -> Path:
    """Create (once) a git + DVC workspace holding the repository's pipeline files and samples.

    Returns:
        The workspace folder.
    """
    if (root / "dvc.yaml").is_file() and (root / ".git").is_dir():
        return root
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKSPACE_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    for sub in (*scenes, "data/samples/bigearthnet"):
        shutil.copytree(REPO / sub, root / sub, dirs_exist_ok=True)
    ident = ["-c", f"user.name=a2mae {who}", "-c", f"user.email=a2mae-{who}@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", f"{who} workspace"]):
        subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True)
    return root


def run_environment(out: Path) -> None:
    """Settings of an embedded pipeline run kept in ``out``: Prefect's home there, no telemetry, quiet MLflow.

    Prefect must be imported after this (unless ``PREFECT_HOME`` was already set).
    """
    out = out.resolve()
    (out / "prefect").mkdir(parents=True, exist_ok=True)  # Prefect warns when it cannot create it
    os.environ.setdefault("PREFECT_HOME", str(out / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the embedded API server starts with the run; a busy machine takes longer than Prefect's 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def run_demo(out: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the retrain flow on the samples in ``out/workspace``; returns its result.

    Prefect is imported here, after ``PREFECT_HOME`` points into ``out`` (unless already set).
    """
    out = out.resolve()
    run_environment(out)
    from a2mae.samples import sample_path
    from flows.params import RetrainIngest, RetrainParams, RetrainVersion
    from flows.retrain import retrain

    ws = make_workspace(out / "workspace")
    sources = [*SAMPLE_SCENES, str(sample_path("s2_l1c")), str(sample_path("l8_l1"))]
    params = RetrainParams(
        project_dir=str(ws),
        ingest=RetrainIngest(sources=sources),
        version=RetrainVersion(dvc_remote="local", git_commit=True),  # no S3 store in embedded mode
        overrides=[*DEMO_SETTINGS, *(overrides or [])],
    )
    return retrain(params)


def ui_ports(host: str = "127.0.0.1") -> tuple[int, int]:
    """MLflow's and Prefect's UI ports for this demo: the first free ones from 5000 and 4200.

    The links the runs get (MLflow -> Prefect flow run, Prefect artifact -> MLflow page) use these
    ports, and so do the closing "where to look" commands.
    """
    from a2mae.services.base import free_port

    return free_port(5000, host), free_port(4200, host)


def link_env(mlflow_port: int, prefect_port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """The variables that make the runs' links point at the UIs the demo tells the user to start."""
    from flows.common import MLFLOW_UI_ENV

    return {MLFLOW_UI_ENV: f"http://{host}:{mlflow_port}", "PREFECT_UI_URL": f"http://{host}:{prefect_port}"}


def where_to_look(
    out: Path, result: dict[str, Any], seconds: float, ports: tuple[int, int] | None = None
) -> str:
    """The closing message: what happened and the commands to look at it."""
    out = out.resolve()
    ws = out / "workspace"
    snap = result.get("snapshot", {})
    lines = [
        "",
        f"a2mae demo: pipeline finished in {seconds:.0f} s",
        f"  snapshot  {ws / 'data' / 'stssd'}  (DVC {snap.get('md5')}, git commit {snap.get('git_commit')})",
        f"  sets      {_set_mix_line(ws / 'data' / 'stssd')}",
    ]
    if result.get("skipped"):
        lines.append("  training  skipped: the champion encoder was trained on this snapshot")
    else:
        ft, ev = result["finetune"], result["evaluate"]
        lines.append(
            f"  model     {ft['model']} v{ft['version']}: {ft['metric']} {ft['score']:.4f}"
            f" -> {ev['decision']}"
        )
    return "\n".join([*lines, "", *look_commands(out, ports=ports), *predict_command(out, result)])


def predict_command(out: Path, result: dict[str, Any]) -> list[str]:
    """The closing "predict" lines: the model the run left as champion, on a bundled scene, ready to run.

    The tracking URI comes first on the line (``MLFLOW_TRACKING_URI`` wins over a shell pointed at the
    services), so the command finds the demo's registry from any folder.
    """
    import shlex

    from a2mae.config import load_params

    out = out.resolve()
    ws = out / "workspace"
    ft = result.get("finetune") or {}
    p = load_params(ws / "params.yaml" if (ws / "params.yaml").is_file() else None)
    model = ft.get("model") or f"{p.finetune.model_prefix}{p.finetune.task}"
    scene = ws / SAMPLE_SCENES[0]
    store = f"sqlite:///{ws / 'mlruns.db'}"
    words = [
        f"MLFLOW_TRACKING_URI={store}",
        str(Path(sys.executable).parent / "a2mae"),
        "predict",
        str(scene),
        "--model",
        f"models:/{model}@champion",
        "--out",
        str(out / "predict"),
        "--overwrite",
    ]
    return [
        f"  Predict  {' '.join(shlex.quote(w) for w in words)}",
        "           (the champion on a bundled Sentinel-2 scene: chip labels in predict/, docs/predict.md)",
    ]


@dataclass(frozen=True)
class UiCommand:
    """How to start one UI over the demo's stores: ``env -u UNSET VARS... ARGV``, then open ``url``."""

    argv: list[str]
    env: dict[str, str]
    url: str
    unset: tuple[str, ...] = ()

    def shell(self) -> str:
        """The command as one shell line (what the closing message prints)."""
        words = [*(f"-u {name}" for name in self.unset), *(f"{k}={v}" for k, v in self.env.items())]
        return " ".join(["env", *words, *self.argv] if words else self.argv)


def ui_commands(
    out: Path, host: str = "127.0.0.1", ports: tuple[int, int] | None = None
) -> tuple[UiCommand, UiCommand]:
    """``mlflow ui`` and ``prefect server start`` over the demo's stores in ``out``, on ports free now.

    The services of ``infra/`` may hold MLflow's 5000 and Prefect's 4200 (``mlflow ui`` on a taken port
    prints "Address already in use" and exits 0), so each UI gets the first free port from there on.
    The Prefect command drops ``PREFECT_API_URL`` (a shell pointed at the services) and tells the UI
    where its API is. ``ports`` are the ones the runs' links were made with (still free: kept).

    Returns:
        ``(mlflow, prefect)``.
    """
    from a2mae.services.base import free_port

    out = out.resolve()
    bindir = Path(sys.executable).parent
    mlflow_port, prefect_port = ports or (5000, 4200)
    mlflow_port, prefect_port = free_port(mlflow_port, host), free_port(prefect_port, host)
    store = f"sqlite:///{out / 'workspace' / 'mlruns.db'}"
    ui = [str(bindir / "mlflow"), "ui", "--backend-store-uri", store]
    mlflow = UiCommand([*ui, "--host", host, "--port", str(mlflow_port)], {}, f"http://{host}:{mlflow_port}")
    prefect = UiCommand(
        [str(bindir / "prefect"), "server", "start", "--host", host, "--port", str(prefect_port)],
        {"PREFECT_HOME": str(out / "prefect"), "PREFECT_UI_API_URL": f"http://{host}:{prefect_port}/api"},
        f"http://{host}:{prefect_port}",
        unset=("PREFECT_API_URL",),
    )
    return mlflow, prefect


def look_commands(out: Path, host: str = "127.0.0.1", ports: tuple[int, int] | None = None) -> list[str]:
    """The "where to look" lines: the UIs of :func:`ui_commands` and the DVC workspace."""
    out = out.resolve()
    ws = out / "workspace"
    bindir = Path(sys.executable).parent
    mlflow, prefect = ui_commands(out, host, ports)
    return [
        "Where to look (ports free now; the services of infra/ keep theirs):",
        f"  MLflow   {mlflow.shell()}",
        f"           then open {mlflow.url} (runs, models, the @champion alias)",
        f"  Prefect  {prefect.shell()}",
        f"           then open {prefect.url} (flow runs, artifacts)",
        f"  DVC      cd {ws} && git log --oneline && {bindir / 'dvc'} status",
        "  Services mode (Prefect UI forms, schedules, new-imagery trigger): infra/up.sh, docs/services.md",
    ]


def _stop_prefect_server() -> None:
    """Stop Prefect's temporary server now, while its log lines still go to the log file (not at exit).

    The flow runs' logs still queued for the API are sent first (else Prefect's log worker prints
    "Error logging to API" on stderr once the server is gone).
    """
    try:
        from prefect.logging.handlers import APILogWorker
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:
        return
    try:
        APILogWorker.drain_all(timeout=10)
    except Exception as err:  # best effort: the logs are in the log file too
        logging.getLogger(__name__).warning("flow-run logs not all sent to Prefect: %s", err)
    for server in list(getattr(SubprocessASGIServer, "_instances", {}).values()):
        if getattr(server, "running", False):
            server.stop()


def _set_mix_line(snapshot: Path) -> str:
    """How many multi-image sets of real imagery the snapshot holds (every demo scene is real)."""
    from a2mae.stssd.snapshot import set_mix

    mix = set_mix(snapshot)
    return (
        f"{mix.multi_image} multi-image sets of real imagery of {mix.sets} ({mix.multi_date} multi-date, "
        f"{mix.multi_sensor} multi-sensor; {mix.multi_image_train} in train)"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line of the demo."""
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo-output", help="Output folder (workspace, Prefect home, demo.log).")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (repeatable).")
    ap.add_argument(
        "-v", "--verbose", action="count", default=0, help="Also show the libraries' warnings (-vv: info)."
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ports = ui_ports()
    os.environ.update({k: v for k, v in link_env(*ports).items() if k not in os.environ})
    with logs.to_file(out / "demo.log", verbose=args.verbose, capture_fds=True) as term:
        shown = console.Output("normal", term.out, term.err, final_lines=True)
        with console.use(shown):
            return _run(out, args.sets, ports, shown, term.log_file)


def _run(out: Path, sets: list[str], ports: tuple[int, int], shown: console.Output, log_file: Path) -> int:
    """The demo inside its output: header, stages, summary; a failure is one line (traceback in the log)."""
    from a2mae.errors import A2maeError, safe_line

    shown.line("a2mae demo: the retrain pipeline on the bundled real sample scenes, in embedded mode")
    shown.line(f"  (library messages: {_shorter(log_file)}; -v shows their warnings)")
    t0 = time.perf_counter()
    try:
        result = run_demo(out, sets)
    except A2maeError as err:
        shown.err.write(f"a2mae demo: error: {safe_line(str(err))}\n")
        return 2
    except Exception as err:
        logging.getLogger("a2mae.demo").exception("the demo failed")
        first = safe_line(str(err).strip().splitlines()[0] if str(err).strip() else "")
        shown.err.write(f"a2mae demo: failed: {type(err).__name__}: {first} (traceback in {log_file})\n")
        return 1
    finally:
        _stop_prefect_server()
    shown.line(where_to_look(out, result, time.perf_counter() - t0, ports))
    return 0


def _shorter(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
