"""Concurrent writers of one model's @champion: promote, rollback and evaluate in 8 processes at once.

Every worker is a forked process that runs the real CLI (``a2mae promote / rollback / evaluate``, through
:func:`a2mae.cli.main`) several times against the same registered model, once on SQLite in embedded mode
and once through the MLflow server of ``infra/`` (:class:`a2mae.services.mlflow.MlflowServer`). The
parent never opens the store before the workers are done (a forked SQLite connection is not safe).

What must hold afterwards:

* every command that reported a move has its own entry in the alias history (same version, previous
  version and reason; evaluate: its run id), and there are no other entries;
* every other command was refused in one line (exit 1 or 2), never a traceback;
* the chain of previous versions is unbroken and ``a2mae history --verify`` agrees;
* the final ``@champion`` is the version of the last entry of the history.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import random
import re
import traceback
from pathlib import Path

import pytest

from a2mae.cli import main

NAME = "a2mae-classification"
MOVED = re.compile(r"@champion -> v(\d+) \((?:was v(\d+)|was unset|rolled back from v(\d+))\)")
EVAL_RUN = re.compile(r"MLflow run ([0-9a-f]{32})")


def _run(argv: list[str]) -> dict:
    """One CLI command in this process: exit code, stdout, stderr (a traceback is recorded, not raised)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException:  # a traceback is the failure looked for
            rc, err = -1, io.StringIO(traceback.format_exc())
    return {"argv": argv, "rc": rc, "out": out.getvalue(), "err": err.getvalue()}


def _forked(target, *args) -> int:
    """Run ``target(*args)`` in a forked child; returns its pid (the child exits 0, or 1 on an error)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (runs in the child)
        code = 1
        try:
            import torch

            torch.set_num_threads(1)
            target(*args)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _wait(pids: list[int]) -> list[int]:
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def _setup(data: Path, out: Path) -> None:
    """Register four stand-in versions (v1..v4) and make v1 the first champion (one history entry)."""
    import mlflow

    from tests.evaluate.test_evaluate import constant_model, register

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("a2mae-finetune")
    versions = [register(constant_model(answer), data) for answer in (1, 2, 0, 0)]
    first = _run(["promote", NAME, versions[0], "--reason", "setup"])
    out.write_text(json.dumps({"versions": versions, "first": first}))


def _worker(index: int, plan: list[list[str]], out: Path) -> None:
    """Run the commands of ``plan`` one after the other (with small random pauses)."""
    import time

    rng = random.Random(index)
    results = []
    for argv in plan:
        time.sleep(rng.uniform(0, 0.05))
        results.append(_run(argv))
    out.write_text(json.dumps(results))


def _plans(versions: list[str], data: Path) -> list[list[list[str]]]:
    """8 workers: 5 promote, 2 roll back (each 3 times), 1 evaluates the two better versions."""
    rng = random.Random(22)
    plans = []
    for w in range(5):
        plans.append([["promote", NAME, rng.choice(versions), "--reason", f"w{w}-{k}"] for k in range(3)])
    for w in range(5, 7):
        plans.append([["rollback", NAME, "--reason", f"w{w}-{k}"] for k in range(3)])
    sets = ["--data", str(data), "--set", "evaluate.promotion_margin=0.05"]
    plans.append([["evaluate", NAME, versions[2], *sets], ["evaluate", NAME, versions[3], *sets]])
    return plans


def _check(results: list[dict], uri: str) -> None:
    """The invariants of the module docstring."""
    from mlflow import MlflowClient

    from a2mae.registry import aliases

    c = MlflowClient(uri, uri)
    events = aliases.history(c, NAME)
    assert events[0].reason == "setup"
    entries = [(e.version, e.previous, e.reason if e.action != "auto" else e.run_id) for e in events[1:]]
    reported = []
    for r in results:
        assert r["rc"] in (0, 1, 2), f"{r['argv']}: exit {r['rc']}\n{r['err']}"
        assert "Traceback" not in r["err"], r
        if r["rc"] != 0:  # one line, after MLflow's own output (its download bars)
            assert r["err"].strip().splitlines()[-1].startswith("a2mae: error: "), r
            continue
        moved = MOVED.search(r["out"])
        if r["argv"][0] == "evaluate":
            if moved is None:
                continue  # rejected by the gate: nothing moved
            reported.append((moved[1], moved[2], EVAL_RUN.search(r["out"])[1]))
        else:
            assert moved is not None, r
            reported.append((moved[1], moved[2] or moved[3], r["argv"][-1]))
    assert sorted(reported, key=str) == sorted(entries, key=str), "a reported move without its entry"
    for before, after in itertools.pairwise(events):
        assert after.previous == before.version, f"broken chain at {after}"
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == events[-1].version
    assert len(reported) >= 8  # the race happened: most commands moved the alias
    verify = _run(["history", NAME, "--verify"])
    assert verify["rc"] == 0 and "unbroken" in verify["out"], verify
    refused = [r["err"].strip().splitlines()[-1] for r in results if r["rc"]]
    print(f"\n{len(results)} commands: {len(reported)} moves reported, each with its entry; refused:")
    print("\n".join(sorted({re.sub(r"v\d+|\d{6}", "#", line) for line in refused})))
    print(verify["out"].splitlines()[-1])


def _scenario(tmp_path: Path, data: Path, uri: str, monkeypatch) -> None:
    """Set up the model, run the 8 workers at once, check what they reported against the history."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    assert _wait([_forked(_setup, data, tmp_path / "setup.json")]) == [0]
    setup = json.loads((tmp_path / "setup.json").read_text())
    assert setup["first"]["rc"] == 0, setup["first"]
    plans = _plans(setup["versions"], data)
    outs = [tmp_path / f"worker{i}.json" for i in range(len(plans))]
    pids = [_forked(_worker, i, plan, out) for i, (plan, out) in enumerate(zip(plans, outs, strict=True))]
    assert len(pids) >= 8
    assert _wait(pids) == [0] * len(pids)
    _check([r for out in outs for r in json.loads(out.read_text())], uri)


@pytest.fixture
def eval_data(cls_dataset):
    from tests.evaluate.test_evaluate import LABELS

    return cls_dataset(LABELS)


def test_concurrent_moves_on_sqlite_lose_no_history(tmp_path, eval_data, empty_mlflow_db, monkeypatch):
    import shutil

    shutil.copyfile(empty_mlflow_db, tmp_path / "mlflow.db")
    _scenario(tmp_path, eval_data, f"sqlite:///{tmp_path / 'mlflow.db'}", monkeypatch)


@pytest.mark.slow
def test_concurrent_moves_through_the_mlflow_server_lose_no_history(tmp_path, eval_data, monkeypatch):
    from a2mae.services.base import free_port_pair
    from a2mae.services.mlflow import MlflowServer

    server = MlflowServer(tmp_path / "mlflow", port=free_port_pair(low=20000, high=30000))
    server.start(timeout=120)
    try:
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        _scenario(tmp_path, eval_data, server.url, monkeypatch)
    finally:
        server.stop(timeout=10)
