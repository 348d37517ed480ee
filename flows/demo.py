"""The demo: the whole pipeline (``retrain``) on the real sample scenes, in embedded mode.

``python -m flows.demo [--out demo-output] [--set section.key=value ...]`` builds a small DVC + git
workspace under ``<out>/workspace`` (the repository's ``dvc.yaml``, ``params.yaml`` and DVC config, the
bundled samples), then runs the retrain flow against Prefect's ephemeral API (its database kept in
``<out>/prefect`` so the runs can be browsed afterwards), MLflow on SQLite, a local Ray and the local
DVC remote: ingest of the real sample scenes (``data/samples/``: Sentinel-2 L1C, L2A and a 4-date
surface reflectance series, Landsat-8 L1 and Collection-2 L2, NAIP), tiling, a DVC snapshot
(committed to the workspace's git), pre-training, fine-tuning on the BigEarthNet samples, evaluation
and promotion. It ends by printing how many multi-image sets of real imagery the snapshot holds, and
where to look. A second run reuses the workspace: unchanged inputs are cache hits and
training is skipped because the champion was trained on the same snapshot.

The budget (``DEMO_SETTINGS``) keeps it to minutes on 2 CPU cores; ``--set`` changes any of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def make_workspace(root: Path) -> Path:
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
    samples = REPO / "data" / "samples"
    for sub in (*(Path(p).name for p in SAMPLE_SCENES), "bigearthnet"):
        shutil.copytree(samples / sub, root / "data" / "samples" / sub, dirs_exist_ok=True)
    ident = ["-c", "user.name=a2mae demo", "-c", "user.email=a2mae-demo@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", "demo workspace"]):
        subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True)
    return root


def run_demo(out: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the retrain flow on the samples in ``out/workspace``; returns its result.

    Prefect is imported here, after ``PREFECT_HOME`` points into ``out`` (unless already set).
    """
    out = out.resolve()
    os.environ.setdefault("PREFECT_HOME", str(out / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from a2mae.samples import sample_path
    from flows.params import RetrainParams
    from flows.retrain import retrain

    ws = make_workspace(out / "workspace")
    sources = [*SAMPLE_SCENES, str(sample_path("s2_l1c")), str(sample_path("l8_l1"))]
    params = RetrainParams(
        project_dir=str(ws),
        ingest={"sources": sources},
        version={"dvc_remote": "local", "git_commit": True},  # no S3 store in embedded mode
        overrides=[*DEMO_SETTINGS, *(overrides or [])],
    )
    return retrain(params)


def where_to_look(out: Path, result: dict[str, Any], seconds: float) -> str:
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
    return "\n".join([*lines, "", *look_commands(out)])


def look_commands(out: Path, host: str = "127.0.0.1") -> list[str]:
    """The "where to look" lines: UIs over the demo's own stores, on ports free right now.

    The services of ``infra/`` may hold MLflow's 5000 and Prefect's 4200 (``mlflow ui`` on a taken port
    prints "Address already in use" and exits 0), so each UI gets the first free port from there on.
    The Prefect command drops ``PREFECT_API_URL`` (a shell pointed at the services) and tells the UI
    where its API is.
    """
    from a2mae.services.base import free_port

    out = out.resolve()
    ws = out / "workspace"
    bindir = Path(sys.executable).parent
    mlflow_port = free_port(5000, host)
    prefect_port = free_port(4200, host)
    api = f"http://{host}:{prefect_port}/api"
    return [
        "Where to look (ports free now; the services of infra/ keep theirs):",
        f"  MLflow   {bindir / 'mlflow'} ui --backend-store-uri sqlite:///{ws / 'mlruns.db'} "
        f"--host {host} --port {mlflow_port}",
        f"           then open http://{host}:{mlflow_port} (runs, models, the @champion alias)",
        f"  Prefect  env -u PREFECT_API_URL PREFECT_HOME={out / 'prefect'} PREFECT_UI_API_URL={api} "
        f"{bindir / 'prefect'} server start --host {host} --port {prefect_port}",
        f"           then open http://{host}:{prefect_port} (flow runs, artifacts)",
        f"  DVC      cd {ws} && git log --oneline && {bindir / 'dvc'} status",
        "  Services mode (Prefect UI forms, schedules, new-imagery trigger): infra/up.sh, docs/services.md",
    ]


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
    ap.add_argument("--out", default="demo-output", help="Output folder (workspace, Prefect home).")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (repeatable).")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    try:
        result = run_demo(out, args.sets)
    except Exception as err:
        from a2mae.errors import A2maeError, safe_line

        if isinstance(err, A2maeError):
            print(f"a2mae demo: error: {safe_line(str(err))}", file=sys.stderr)
            return 2
        raise
    print(where_to_look(out, result, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
