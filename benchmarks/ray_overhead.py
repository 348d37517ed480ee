"""Ray Train overhead: the same training loop in this process and under Ray Train with one worker.

Both runs execute :func:`a2mae.pretrain.loop.run_worker` on the same tiny snapshot (synthetic scenes tiled
into 32-px chips), the same model and batches, without MLflow and without checkpoints in the measured
window. Steady-state throughput is taken from the worker's own per-step timestamps after a warm-up, so
Ray's start-up does not count against it; the start-up costs are printed separately:

* ``ray.init`` of a local, loopback-only Ray;
* from ``TorchTrainer.fit()`` to the first finished step (controller, worker process, imports, data).

In-process and Ray runs alternate (``--rounds``), ending with an in-process run; medians are compared.
On a shared machine wall-clock rates swing with other load, so the rate per CPU-second of the training
process is printed too (it is steadier). Goal: under 10 % steady-state overhead.

Usage::

    python benchmarks/ray_overhead.py                 # nano model, 100 steps, 2 rounds
    python benchmarks/ray_overhead.py --steps 200 --model a2mae_vit_tiny_p8_t96 --batch 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_snapshot(root: Path) -> Path:
    """Tile synthetic co-located scenes into a small snapshot (32-px chips)."""
    from a2mae.config import load_params
    from a2mae.ingest.catalog import write_catalog
    from a2mae.stssd.run import tile
    from a2mae.testing.scenes import default_specs, make_scenes

    records = make_scenes(root / "scenes", default_specs(1.0))
    write_catalog(records, root / "catalog.parquet")
    params = load_params(overrides=["tile.workers=1", "tile.chip_size=32", "tile.grid_m=320"])
    tile(root / "catalog.parquet", root / "stssd", params, progress=False)
    return root / "stssd"


def steady_rate(times: dict[int, tuple[float, float]], warmup: int) -> tuple[float, float]:
    """Steps per wall second and per CPU second of the training process, from step ``warmup`` on."""
    last = max(times)
    wall = (last - warmup) / (times[last][0] - times[warmup][0])
    cpu = (last - warmup) / (times[last][1] - times[warmup][1])
    return wall, cpu


def run_in_process(params, snapshot: str, run_dir: Path) -> dict[int, tuple[float, float]]:
    """Per-step timestamps of the loop in this process."""
    from a2mae.pretrain.loop import make_loop_config, run_local
    from a2mae.pretrain.run import PretrainStage

    times: dict[int, tuple[float, float]] = {}

    def progress(info):
        if info.get("event") == "step":
            times[info["step"]] = (info["time"], info["cpu_time"])

    run_local(make_loop_config(PretrainStage.of(params).loop, snapshot, progress=progress), run_dir, keep=1)
    return times


def run_ray(params, snapshot: str, name: str) -> tuple[dict[int, tuple[float, float]], float, float]:
    """Per-step timestamps under Ray Train, ``ray.init`` seconds and fit-to-first-step seconds."""
    import ray

    from a2mae.pretrain.loop import make_loop_config
    from a2mae.pretrain.ray_train import build_trainer, init_ray, resolve_storage
    from a2mae.pretrain.run import PretrainStage

    t0 = time.perf_counter()
    init_ray(params.pretrain)
    t_init = time.perf_counter() - t0

    @ray.remote(num_cpus=0)
    class Recorder:
        def __init__(self) -> None:
            self.times: dict[int, tuple[float, float]] = {}
            self.threads = 0

        def update(self, info) -> None:
            if info.get("event") == "step":
                self.times[info["step"]] = (info["time"], info["cpu_time"])
            elif info.get("event") == "start":
                self.threads = info["threads"]

        def get(self) -> tuple[dict[int, tuple[float, float]], int]:
            return self.times, self.threads

    rec = Recorder.remote()
    config = make_loop_config(PretrainStage.of(params).loop, snapshot, progress=rec)
    t_fit = time.time()
    build_trainer(params.pretrain, name, config, resolve_storage(params.pretrain, params.data.s3)).fit()
    times, threads = ray.get(rec.get.remote())
    ray.shutdown()
    print(f"Ray worker: {threads} torch threads")
    return times, t_init, times[min(times)][0] - t_fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="optimiser steps per run")
    ap.add_argument("--warmup", type=int, default=20, help="steps left out of the steady-state rate")
    ap.add_argument("--model", default="a2mae_vit_nano_p8_t96")
    ap.add_argument("--batch", type=int, default=8, help="image sets per step")
    ap.add_argument("--rounds", type=int, default=2, help="in-process / Ray alternations")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads of both runs (Ray: CPUs of the worker)"
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)  # Ray sets the worker's OMP threads from its CPUs: the same
    with tempfile.TemporaryDirectory(prefix="a2mae-bench-") as tmp:
        measure(args, Path(tmp))


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Run the rounds in ``tmp`` and print the comparison."""
    import torch

    from a2mae.config import load_params

    snapshot = str(make_snapshot(tmp))
    cpus = args.threads
    params = load_params(
        overrides=[
            f"model.name={args.model}",
            f"pretrain.max_steps={args.steps}",
            f"pretrain.batch_size={args.batch}",
            f"pretrain.checkpoint_every_steps={args.steps}",  # one checkpoint, after the last step
            "pretrain.num_workers=1",
            f"pretrain.cpus_per_worker={cpus}",
            "pretrain.ray_dashboard=false",
            "pretrain.system_metrics=false",
            f"pretrain.storage_path={tmp / 'runs'}",
        ]
    )
    print(f"model {args.model}, {args.batch} sets/step, {args.steps} steps (rate after step {args.warmup}),")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    rounds = []
    for r in range(args.rounds):
        before = steady_rate(run_in_process(params, snapshot, tmp / f"local-{r}"), args.warmup)
        ray_times, t_init, t_first = run_ray(params, snapshot, f"bench-{r}")
        rounds.append((before, steady_rate(ray_times, args.warmup), t_init, t_first))
    after = steady_rate(run_in_process(params, snapshot, tmp / "local-last"), args.warmup)

    print()
    print(f"{'':34s}{'steps/s (wall)':>16s}{'steps/CPU-s':>14s}")
    local = [r[0] for r in rounds] + [after]
    remote = [r[1] for r in rounds]
    for i, (b, u, _, _) in enumerate(rounds):
        print(f"{f'in-process, round {i + 1}':34s}{b[0]:16.2f}{b[1]:14.2f}")
        print(f"{f'Ray Train 1 worker, round {i + 1}':34s}{u[0]:16.2f}{u[1]:14.2f}")
    print(f"{'in-process, last':34s}{after[0]:16.2f}{after[1]:14.2f}")
    base_wall = statistics.median(x[0] for x in local)
    base_cpu = statistics.median(x[1] for x in local)
    ray_wall = statistics.median(x[0] for x in remote)
    ray_cpu = statistics.median(x[1] for x in remote)
    print(
        f"steady-state overhead of Ray Train (medians): wall {(base_wall / ray_wall - 1) * 100:+.1f} %, "
        f"CPU {(base_cpu / ray_cpu - 1) * 100:+.1f} % (goal: under 10 %)"
    )
    t_init = statistics.median(r[2] for r in rounds)
    t_first = statistics.median(r[3] for r in rounds)
    print(f"Ray start-up: ray.init {t_init:.1f} s; fit() to first step {t_first:.1f} s")


if __name__ == "__main__":
    main()
