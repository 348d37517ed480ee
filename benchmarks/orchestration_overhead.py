"""Orchestration overhead: the demo pipeline through the Prefect flows vs the same library calls.

Run: ``.venv/bin/python benchmarks/orchestration_overhead.py [--quick] [--set section.key=value ...]``

Both arms start from a fresh git + DVC workspace with the same parameters (the demo's budget;
``--quick`` uses a tiny model and a few steps) and do the same work: ingest the real sample scenes,
tile, DVC commit + push + git commit, pre-train, fine-tune, evaluate, promote, tag lineage. The
"direct" arm calls the library functions in plain Python; the "prefect" arm calls ``flows.retrain``
against a temporary Prefect API (started before the clock, reported separately; flow-run heartbeats
on, as in production). Goal: overhead under 15 % on the demo.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

QUICK = (
    "pretrain.model_overrides={depth: 1, embed_dim: 32, num_heads: 2, decoder_embed_dim: 32, "
    "decoder_depth: 1, decoder_num_heads: 2}",
    "pretrain.max_steps=3",
    "pretrain.batch_size=4",
    "pretrain.system_metrics=false",
    "finetune.max_steps=2",
    "finetune.batch_size=4",
)
#: Versioning of both arms: the local DVC remote (no S3 store here), dvc.lock committed to git.
EMBEDDED = {"dvc_remote": "local", "git_commit": True}


def direct(ws: Path, sources: list[str], sets: list[str]) -> float:
    """The pipeline as plain library calls; returns wall seconds."""
    from mlflow.tracking import MlflowClient

    from a2mae.dvc import DvcWorkspace
    from a2mae.evaluate.run import evaluate_version
    from a2mae.finetune.run import finetune
    from a2mae.ingest.run import ingest
    from a2mae.pretrain.run import run_pretrain
    from a2mae.registry import aliases
    from a2mae.stssd.run import tile
    from a2mae.tracking.client import tracking_uri
    from flows.params import RetrainParams

    t0 = time.perf_counter()
    form = RetrainParams(project_dir=str(ws), ingest={"sources": sources}, version=EMBEDDED, overrides=sets)
    p = form.resolve()
    ingest(
        [str(ws / s) if not Path(s).is_absolute() else s for s in sources], p.data.catalog, p, progress=False
    )
    summary = tile(p.data.catalog, p.tile.snapshot, p, progress=False)
    dvc = DvcWorkspace(ws)
    dvc.set_params({"tile.grid_m": p.tile.grid_m})
    dvc.commit()
    md5 = dvc.out_hash("data/stssd")
    dvc.push(form.version.dvc_remote)
    dvc.git_commit(["dvc.lock", "params.yaml"], f"data: STSSD snapshot {md5}")
    run = run_pretrain(p, p.tile.snapshot, name=f"{p.pretrain.run_name}-{summary.snapshot_id[:12]}")
    out = finetune(p, encoder=f"models:/{p.registry.encoder_model}/{run.registered_version}", progress=False)
    ev = evaluate_version(p, out.version.name, out.version.version)
    client = MlflowClient(tracking_uri(p.registry))
    if ev.promoted:
        aliases.move(client, p.registry.encoder_model, run.registered_version, "champion", "auto", "bench")
    for run_id in (run.run_id, out.run_id, ev.run_id):
        client.set_tag(run_id, "a2mae.snapshot_dvc_hash", str(md5))
    return time.perf_counter() - t0


def through_prefect(ws: Path, sources: list[str], sets: list[str]) -> float:
    """The same pipeline as the retrain flow; returns wall seconds (the API is already up)."""
    from flows.params import RetrainParams
    from flows.retrain import retrain

    t0 = time.perf_counter()
    state = retrain(
        RetrainParams(project_dir=str(ws), ingest={"sources": sources}, version=EMBEDDED, overrides=sets),
        return_state=True,
    )
    seconds = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"the retrain flow failed: {state.message}")
    return seconds


def _ray_down() -> None:
    """Both arms start their own local Ray (no warm runtime carried from one arm to the other)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Tiny model and a few steps (seconds per stage).")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value")
    args = ap.parse_args()

    from a2mae.samples import sample_path
    from flows.demo import DEMO_SETTINGS, make_workspace
    from flows.params import SAMPLE_SCENES

    sets = [*DEMO_SETTINGS, *(QUICK if args.quick else ()), *args.sets]
    sources = [*SAMPLE_SCENES, str(sample_path("s2_l1c")), str(sample_path("l8_l1"))]
    with tempfile.TemporaryDirectory(prefix="a2mae-bench-") as tmp:
        root = Path(tmp)
        t_direct = direct(make_workspace(root / "direct"), sources, sets)
        _ray_down()
        t0 = time.perf_counter()
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=180):
            t_server = time.perf_counter() - t0
            t_prefect = through_prefect(make_workspace(root / "prefect"), sources, sets)
        _ray_down()
    overhead = 100.0 * (t_prefect - t_direct) / t_direct
    print(f"pipeline ({'quick' if args.quick else 'demo'} budget), same work in both arms:")
    print(f"  direct library calls : {t_direct:8.1f} s")
    print(
        f"  through Prefect flows: {t_prefect:8.1f} s   (+ {t_server:.1f} s to start the temporary API, once)"
    )
    print(f"  overhead             : {t_prefect - t_direct:+8.1f} s = {overhead:+.1f} %   (goal: < 15 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
