"""The demo as a user sees it: ``python -m flows.demo`` prints its stages, progress bars and the summary,
and nothing else (library messages go to ``<out>/demo.log``).

Runs the real demo (the whole pipeline in embedded mode, about 3 minutes on 2 cores) in a subprocess
with its output captured, then checks every line: none may match known noise (Ray Train controller
warnings, tracebacks, Python warnings, Prefect's home warning, the multiple-Ray-instances message), and
every line of stdout must be one of the demo's own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]

#: Lines seen before the output was made quiet; any of them fails the test.
NOISE = re.compile(
    r"Failed to query Ray Train Controller|Traceback \(most recent call last\)|UserWarning|"
    r"DeprecationWarning|FutureWarning|RuntimeWarning|PreemptionWatcher|Found multiple active Ray instances|"
    r"Failed to create the Prefect home|RAY_AUTH|\x1b\[|^\s*(WARNING|ERROR|INFO)\b|^\d{2}:\d{2}:\d{2}\.\d+ \|"
)
#: The demo's own stdout lines: headline, stage lines, summary, where to look.
OWN = re.compile(
    r"^$|^a2mae demo: |^  \(library messages: |"
    r"^  (ingest|tile|version|pretrain|finetune|evaluate|promote)\s{2,}|"
    r"^  (snapshot|sets|model|training)\s{2,}|^Where to look|^  (MLflow|Prefect|DVC)\s{2,}|^\s{11}then open |"
    r"^  Services mode|^  Predict  MLFLOW_TRACKING_URI=|^\s{11}\(the champion"
)
#: Progress bars (stderr): a label, the bar, a count.
BAR = re.compile(r"^(ingest|tile|pretrain|ft \w+|predict|evaluate)\s+[━╸╺ ]+\s*\d+/\d+ ")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "RAY_", "AWS_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.demo", "--out", str(out / "o")],
        cwd=REPO,
        env={**env, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    return proc, out / "o"


def test_the_demo_succeeds_and_prints_only_its_own_lines(demo):
    proc, out = demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines() + proc.stderr.splitlines()
    noisy = [ln for ln in lines if NOISE.search(ln)]
    assert not noisy, noisy
    foreign = [ln for ln in proc.stdout.splitlines() if not OWN.match(ln)]
    assert not foreign, foreign
    for ln in proc.stderr.splitlines():
        assert BAR.match(ln) or not ln.strip(), ln
    assert (out / "demo.log").stat().st_size > 0  # the libraries' lines went there


def test_the_demo_trains_on_real_multi_image_sets(demo):
    proc, out = demo
    stages = [ln.split()[0] for ln in proc.stdout.splitlines() if re.match(r"^  [a-z]+\s{2,}", ln)]
    for stage in ("ingest", "tile", "version", "pretrain", "finetune", "evaluate"):
        assert stage in stages, proc.stdout
    sets = re.search(
        r"^  sets\s+(\d+) multi-image sets of real imagery of (\d+) \((\d+) multi-date", proc.stdout, re.M
    )
    assert sets is not None and int(sets.group(3)) >= 50, proc.stdout  # the OSCD pairs: 52 two-date sets

    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{out / 'workspace' / 'mlruns.db'}")
    exp = client.get_experiment_by_name("a2mae-pretrain")
    (run,) = client.search_runs([exp.experiment_id])
    per_sensor = [k for k in run.data.metrics if k.startswith("train/loss_per_sensor/")]
    assert len(per_sensor) > 1, per_sensor  # pre-training saw more than one sensor


def test_the_demo_ends_with_a_predict_command_that_runs(demo, tmp_path):
    """Predict right after the demo: the printed command runs as it is, from any folder."""
    proc, out = demo
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("  Predict  ")]
    setting, *argv = shlex.split(line.split("Predict", 1)[1])
    key, value = setting.split("=", 1)
    assert key == "MLFLOW_TRACKING_URI" and value == f"sqlite:///{out.resolve() / 'workspace' / 'mlruns.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))} | {key: value}
    got = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr
    assert (out / "predict" / "manifest.json").is_file() and not (tmp_path / "mlruns.db").exists()
    default = argv[argv.index("--model") + 1]
    from a2mae.config import load_params

    assert default == load_params().predict.model  # predict.model defaults to what the demo registers


def test_the_demo_leaves_no_progress_line_short_of_its_total(demo):
    proc, _ = demo
    counts = [re.search(r"\s(\d+)/(\d+) ", ln) for ln in proc.stderr.splitlines() if BAR.match(ln)]
    assert counts and all(m is not None and m.group(1) == m.group(2) for m in counts), proc.stderr
