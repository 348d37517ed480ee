"""Pre-training step throughput: A²-MAE on a mixed batch vs a plain MAE of the same size, in one run.

For each model size, both models run full training steps (forward + backward + AdamW step) on the same
number of tokens: A²-MAE on a batch of image sets of mixed composition (S2-L8 sets of 4 images, GF-S2
pairs and triples, single images; anchor-aware masking, fixed visible budget), the plain MAE on the same
number of samples with as many tokens per sample and as many visible tokens (random masking). Steps of
the two models are interleaved, so a busy machine slows both alike; the best step time of each is
reported by default (``--stat median`` for the median). Printed per size:

* image sets/s and tokens/s (all input tokens) and visible tokens/s of both, and their ratio;
* achieved FLOP/s: the useful model FLOPs of a step (matmuls and attention over real tokens; padding
  is not counted) divided by the step time, against a large-matmul peak measured in the same run;
* on CPU, the same per process CPU-second (step CPU time, and the matmul's FLOP per CPU-second as the
  peak). On a machine shared with other processes, CPU time is much steadier than wall time with one
  thread (``--threads 1``); with several threads it also counts the threads' spin-waiting.

Usage::

    python benchmarks/pretrain_step.py                        # CPU fp32, tiny, small and base
    python benchmarks/pretrain_step.py --device cuda --dtype bf16 --batch-sets 64
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from a2mae.models.a2mae import A2MAE
from a2mae.testing.batches import synthetic_batch
from a2mae.testing.models import build_model
from benchmarks.baseline import PlainMAE

SIZES = {
    "nano": "a2mae_vit_nano_p8_t96",
    "tiny": "a2mae_vit_tiny_p8_t96",
    "small": "a2mae_vit_small_p8_t96",
    "base": "a2mae_vit_base_p8_t96",
}
MIX = [["S2", "S2", "L8", "L8"], ["GF2", "S2"], ["S2", "L8"], ["GF1", "S2", "S2"], ["S2"], ["L8", "L8"]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one step."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> tuple[float, float]:
    """Best FLOP/s of an ``n x n @ n x n`` matmul, per wall second and per process CPU second."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(reps + 1):
        wall, cpu = timed(lambda: a @ b, device)
        best, best_cpu = min(best, wall), min(best_cpu, cpu)
    return 2 * n**3 / best, 2 * n**3 / max(best_cpu, 1e-9)


def transformer_flops(lengths: list[int], dim: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of ``depth`` blocks over sequences of the given lengths (real tokens only)."""
    n = sum(lengths)
    linear = 2 * n * dim * dim * (4 + 2 * mlp_ratio)  # qkv + proj + MLP
    attn = sum(4 * seq_len * seq_len * dim for seq_len in lengths)  # QK^T and AV
    return depth * (linear + attn)


def a2mae_flops(model: A2MAE, out) -> float:
    """Useful training-step FLOPs (3x forward) of one A²-MAE step."""
    c = model.config
    lay = out.layout
    pp = c.patch_size**2
    enc_len = torch.bincount(lay.tok_set[~out.mask], minlength=lay.num_sets).tolist()
    dec_len = torch.bincount(lay.tok_set[out.decoded], minlength=lay.num_sets).tolist()
    chans = lay.chan_valid.sum(1)
    f = 2 * float(chans[~out.mask].sum()) * pp * c.embed_dim  # patch embeddings
    f += transformer_flops(enc_len, c.embed_dim, c.depth, c.mlp_ratio)
    f += 2 * sum(enc_len) * c.embed_dim * c.decoder_embed_dim
    f += transformer_flops(dec_len, c.decoder_embed_dim, c.decoder_depth, c.mlp_ratio)
    f += 2 * float(chans[out.decoded].sum()) * pp * c.decoder_embed_dim  # heads
    return 3 * f


def plain_flops(model: PlainMAE, b: int, seq_len: int, keep: int, dims: tuple[int, int, int, int]) -> float:
    dim, depth, ddim, ddepth = dims
    cpp = model.in_chans * model.p**2
    f = 2 * b * seq_len * cpp * dim + transformer_flops([keep] * b, dim, depth)
    f += (
        2 * b * keep * dim * ddim
        + transformer_flops([seq_len] * b, ddim, ddepth)
        + 2 * b * seq_len * ddim * cpp
    )
    return 3 * f


def run_size(size: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    comps = [MIX[i % len(MIX)] for i in range(args.batch_sets)]
    batch = synthetic_batch(comps, size=96, seed=0).to(device)
    model = build_model(SIZES[size]).to(device).train()
    c = model.config
    plain = (
        PlainMAE(
            4,
            c.patch_size,
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.decoder_embed_dim,
            c.decoder_depth,
            c.decoder_num_heads,
        )
        .to(device)
        .train()
    )
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    )
    opt_a = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-4, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    last = {}

    def step_a() -> None:
        opt_a.zero_grad(set_to_none=True)
        with autocast:
            out = model(batch, generator=gen)
        out.loss.backward()
        opt_a.step()
        last["out"] = out

    step_a()
    out = last["out"]
    b = args.batch_sets
    seq_len = max(12, 12 * round(out.num_tokens / b / 12))  # same tokens per sample, 12 x (L/12) grid
    keep = round(out.num_visible_tokens / b)
    imgs = torch.randn(b, 4, 96, seq_len // 12 * 8, device=device)

    def step_p() -> None:
        opt_p.zero_grad(set_to_none=True)
        with autocast:
            loss = plain(imgs, keep)
        loss.backward()
        opt_p.step()

    for _ in range(args.warmup):
        step_a()
        step_p()
    ta, tp = [], []
    for _ in range(args.steps):
        ta.append(timed(step_a, device))
        tp.append(timed(step_p, device))
    out = last["out"]
    pick = min if args.stat == "min" else statistics.median
    t_a, t_p = pick(t for t, _ in ta), pick(t for t, _ in tp)
    c_a, c_p = pick(c for _, c in ta), pick(c for _, c in tp)
    fa = a2mae_flops(model, out)
    fp = plain_flops(plain, b, seq_len, keep, (c.embed_dim, c.depth, c.decoder_embed_dim, c.decoder_depth))
    return {
        "size": size,
        "sets": b,
        "tokens_a": out.num_tokens,
        "vis_a": out.num_visible_tokens,
        "tokens_p": b * seq_len,
        "vis_p": b * keep,
        "t_a": t_a,
        "t_p": t_p,
        "c_a": c_a,
        "c_p": c_p,
        "step_flops_a": fa,
        "step_flops_p": fp,
        "pad_enc": out.encoder_pad_fraction,
        "pad_dec": out.decoder_pad_fraction,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,small,base", help="comma-separated: nano, tiny, small, base")
    ap.add_argument("--batch-sets", type=int, default=12, help="image sets per step")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per model")
    ap.add_argument(
        "--stat",
        choices=["min", "median"],
        default="min",
        help="step time reported: best (least disturbed by other processes) or median",
    )
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    on_cpu = device.type == "cpu"
    n = 2048 if on_cpu else 8192
    peak, peak_cpu = matmul_peak(device, dtype, n, reps=5)
    print(
        f"device {device} ({torch.get_num_threads()} threads), {args.dtype}; "
        f"step time: {args.stat} of {args.steps}"
    )
    print(f"batch: {args.batch_sets} sets cycling {MIX}")
    print(
        f"{'size':5s} {'model':6s} {'step s':>7s} {'sets/s':>7s} {'tok/s':>8s} {'vis tok/s':>9s} "
        f"{'GFLOP/s':>8s} {'% peak':>6s}"
        + (f" {'cpu s':>6s} {'GFLOP/cpu-s':>11s} {'% peak':>6s}" if on_cpu else "")
    )
    for size in args.sizes.split(","):
        r = run_size(size.strip(), args, device, dtype)
        # re-measure the peak next to each size and keep the best (a busy machine lowers it)
        p2, c2 = matmul_peak(device, dtype, n, reps=3)
        peak, peak_cpu = max(peak, p2), max(peak_cpu, c2)
        for tag, t, c, tok, vis, fl in (
            ("a2mae", r["t_a"], r["c_a"], r["tokens_a"], r["vis_a"], r["step_flops_a"]),
            ("plain", r["t_p"], r["c_p"], r["tokens_p"], r["vis_p"], r["step_flops_p"]),
        ):
            line = (
                f"{r['size']:5s} {tag:6s} {t:7.3f} {r['sets'] / t:7.2f} {tok / t:8.0f} {vis / t:9.0f} "
                f"{fl / t / 1e9:8.1f} {100 * fl / t / peak:6.1f}"
            )
            if on_cpu:
                line += f" {c:6.2f} {fl / c / 1e9:11.1f} {100 * fl / c / peak_cpu:6.1f}"
            print(line)
        ratio = (r["tokens_a"] / r["t_a"]) / (r["tokens_p"] / r["t_p"])
        vratio = (r["vis_a"] / r["t_a"]) / (r["vis_p"] / r["t_p"])
        msg = f"{r['size']:5s} a2mae/plain tokens/s {ratio:.2f}x (visible {vratio:.2f}x"
        if on_cpu:
            cratio = (r["tokens_a"] / r["c_a"]) / (r["tokens_p"] / r["c_p"])
            msg += f"; tokens per CPU-second {cratio:.2f}x"
        print(
            msg + "; goal >= 0.9x); "
            f"attention padding enc {100 * r['pad_enc']:.1f}% dec {100 * r['pad_dec']:.1f}%; "
            f"tokens a2mae {r['tokens_a']} / plain {r['tokens_p']}, visible {r['vis_a']} / {r['vis_p']}"
        )
    line = f"matmul peak ({n}^3, best of the run): {peak / 1e9:.1f} GFLOP/s"
    if on_cpu:
        line += f", {peak_cpu / 1e9:.1f} GFLOP per CPU-second"
    print(line)


if __name__ == "__main__":
    main()
