#!/usr/bin/env bash
# The evidence on one GPU (an H100, 80 GB), in at most 8 minutes:
#   1. pre-training step throughput and MFU of the base variant in bf16 (benchmarks/pretrain_step.py:
#      A²-MAE on mixed image sets beside a plain MAE of the same size; useful FLOPs / step time, against
#      the GPU's dense bf16 peak and against a large matmul measured in the same run);
#   2. `make evidence` with params/gpu.yaml: the pipeline's pre-training on the corpus (Prefect, Ray on
#      the GPU, MLflow, DVC), then `a2mae benchmark` on every real labelled set; it prints its table.
# Not yet run on a GPU: docs/evidence.md says so until its figures are there.
#
# Usage: bash benchmarks/gpu_evidence.sh [STEPS]   (STEPS: pre-training steps, default 800)
# Env:   PEAK_TFLOPS (default 989.4: H100 SXM dense bf16), OUT (default gpu-evidence-output).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD"
PY=.venv/bin/python
STEPS="${1:-800}"
PEAK_TFLOPS="${PEAK_TFLOPS:-989.4}"
OUT="${OUT:-gpu-evidence-output}"
mkdir -p "$OUT"

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_evidence: no CUDA device visible to torch (torch $("$PY" -c 'import torch; print(torch.__version__)')); run it on a GPU machine" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'

echo "== 1. step throughput and MFU (base variant, bf16, 128 image sets per step)"
"$PY" benchmarks/pretrain_step.py --device cuda --dtype bf16 --sizes base --batch-sets 128 --steps 10 \
  --warmup 3 --stat median | tee "$OUT/step.txt"
# MFU: the GFLOP/s column (7) of the a2mae and plain lines against the datasheet peak
awk -v peak="$PEAK_TFLOPS" '$1 == "base" && ($2 == "a2mae" || $2 == "plain") {
  printf "MFU %-6s %6.1f %% of %.1f TFLOP/s bf16 dense (%.1f TFLOP/s achieved, %s sets/s)\n", $2, 100 * $7 / (peak * 1000), peak, $7 / 1000, $4
}' "$OUT/step.txt" | tee "$OUT/mfu.txt"

echo "== 2. make evidence with params/gpu.yaml ($STEPS pre-training steps)"
timeout 420 "$PY" -m flows.evidence --params params/gpu.yaml --out "$OUT/evidence" \
  --set "evidence.pretrain_steps=$STEPS" --set "evidence.report=$PWD/$OUT/evidence.md" \
  --set "evidence.figure=$PWD/$OUT/evidence.png"
"$PY" - "$OUT/evidence/workspace/mlruns.db" <<'EOF'
import sys

import mlflow

c = mlflow.tracking.MlflowClient(f"sqlite:///{sys.argv[1]}")
exp = c.get_experiment_by_name("a2mae-pretrain")
(run, *_) = c.search_runs([exp.experiment_id], order_by=["start_time DESC"])
hist = [m.value for m in c.get_metric_history(run.info.run_id, "train/sets_per_s")]
steady = sorted(hist[len(hist) // 4 :])  # after warm-up
if steady:
    print(f"pipeline pre-training: {steady[len(steady) // 2]:.1f} image sets/s (median of {len(steady)} logged steps)")
EOF
sed -n '/^## Results/,$p' "$OUT/evidence.md"
