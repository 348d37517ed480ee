"""Trust issue item 3: a snapshot is checked against its own digests before anyone trusts it.

A flipped byte in a shard, a junk manifest, junk statistics or an edited ``snapshot.json`` are never
"up to date" (tile rebuilds, and says why), the dataset refuses the damaged file by name, and a
pre-training run on a damaged snapshot stops before its first step, with one line naming the file,
leaving no MLflow run RUNNING.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.stssd.dataset import StssdDataset
from a2mae.stssd.run import tile
from a2mae.stssd.snapshot import SnapshotError, verify_snapshot


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    k = len(data) // 2 if offset is None else offset
    data[k] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def snapshot(tiny_snapshot, tmp_path) -> Path:
    out = tmp_path / "stssd"
    shutil.copytree(tiny_snapshot, out)
    return out


def shard_of(root: Path) -> Path:
    return root / json.loads((root / "snapshot.json").read_text())["shards"][0]["path"]


def test_every_shard_digest_is_recorded_and_checks(snapshot):
    doc = verify_snapshot(snapshot)
    assert doc["verified"] == "sha256"
    assert all(len(sh["sha256"]) == 64 for sh in doc["shards"])


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda root: flip_byte(shard_of(root)), "shard-00000.bin: content differs from the sha256"),
        (lambda root: flip_byte(shard_of(root), 0), "shard-00000.bin: content differs from the sha256"),
        (
            lambda root: shard_of(root).write_bytes(shard_of(root).read_bytes()[:-2]),
            "bytes, but snapshot.json",
        ),
        (lambda root: shard_of(root).unlink(), "shard-00000.bin: missing"),
        (
            lambda root: (root / "manifest.parquet").write_bytes(b"PAR1 junk PAR1"),
            "manifest.parquet: content",
        ),
        (lambda root: (root / "stats.json").write_text("{}\n"), "stats.json: content differs"),
    ],
    ids=["flipped-byte", "flipped-first-byte", "truncated", "missing", "junk-manifest", "junk-stats"],
)
def test_damage_is_found_and_never_up_to_date(snapshot, synthetic_scenes, damage, needle, capsys):
    before = {p.name: p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    damage(snapshot)
    with pytest.raises(SnapshotError, match=needle) as err:
        verify_snapshot(snapshot)
    assert "\n" not in str(err.value) and "a2mae tile --force" in str(err.value)
    args = ["tile", "--catalog", str(synthetic_scenes[2]), "--out", str(snapshot), "--no-progress"]
    assert main([*args, "--set", "tile.workers=1"]) == 0
    out = capsys.readouterr().out
    assert "up to date" not in out
    assert f"{needle.split(':')[0]}" in out and ": rebuilt" in out  # says what was wrong
    assert {p.name: p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == before  # repaired exactly
    assert main([*args, "--set", "tile.workers=1"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_an_edited_snapshot_json_is_found(snapshot):
    doc = json.loads((snapshot / "snapshot.json").read_text())
    doc["shards"][0]["bytes"] += 2
    (snapshot / "snapshot.json").write_text(json.dumps(doc))
    with pytest.raises(SnapshotError, match="snapshot_id does not match"):
        verify_snapshot(snapshot)
    doc["shards"][0]["path"] = "../../etc/passwd"
    (snapshot / "snapshot.json").write_text(json.dumps(doc))
    with pytest.raises(SnapshotError, match="no valid file list"):
        verify_snapshot(snapshot)


def test_a_snapshot_without_shard_digests_is_rebuilt_once(snapshot, synthetic_scenes):
    doc = json.loads((snapshot / "snapshot.json").read_text())
    for sh in doc["shards"]:
        del sh["sha256"]  # as written before shard digests were recorded (same snapshot id)
    (snapshot / "snapshot.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    assert verify_snapshot(snapshot)["verified"] == "size"
    params = load_params(overrides=["tile.workers=1"])
    first = tile(synthetic_scenes[2], snapshot, params, progress=False)
    assert not first.up_to_date and "without shard digests" in first.note
    assert tile(synthetic_scenes[2], snapshot, params, progress=False).up_to_date


def test_the_dataset_checks_what_it_opens(snapshot):
    ds = StssdDataset(snapshot, split=None)
    assert len(ds) > 0 and ds[0].images  # an intact snapshot reads
    flip_byte(shard_of(snapshot))
    fresh = StssdDataset(snapshot, split=None)  # manifest and stats are intact: it opens
    with pytest.raises(SnapshotError, match=r"shard-00000\.bin: content differs from the sha256"):
        fresh[0]
    unchecked = StssdDataset(snapshot, split=None, verify=False)
    assert unchecked[0].images  # sizes still match: only the digest would tell
    shard_of(snapshot).write_bytes(shard_of(snapshot).read_bytes()[:-2])
    with pytest.raises(SnapshotError, match=r"bytes, but snapshot\.json records"):
        StssdDataset(snapshot, split=None, verify=False)[0]


@pytest.mark.parametrize("damaged", ["stats.json", "manifest.parquet"])
def test_the_dataset_refuses_junk_statistics_or_manifest(snapshot, damaged):
    flip_byte(snapshot / damaged)
    with pytest.raises(SnapshotError, match=f"{damaged}: content differs from the sha256"):
        StssdDataset(snapshot, split=None)


def _runs(db: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_pretraining_on_a_damaged_snapshot_stops_before_its_first_step(
    pretrain_snapshot, tiny_pretrain_overrides, tmp_path, capsys, monkeypatch
):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    snap = tmp_path / "snap"
    shutil.copytree(pretrain_snapshot, snap)
    flip_byte(shard_of(snap))
    sets = [arg for o in [*tiny_pretrain_overrides, "pretrain.max_steps=2"] for arg in ("--set", o)]
    assert main(["pretrain", "--snapshot", str(snap), "--name", "damaged", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "shard-00000.bin: content differs from the sha256" in err
    assert _runs(tmp_path / "mlflow.db") == []  # stopped before a run was created
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoint*"))


def test_damage_found_during_training_leaves_no_run_running(
    pretrain_snapshot, tiny_pretrain_overrides, tmp_path, monkeypatch
):
    """A shard damaged after the start (the dataset finds it): the run ends FAILED, not RUNNING."""
    import a2mae.stssd.snapshot as snapshot_mod
    from a2mae.errors import A2maeError
    from a2mae.pretrain.run import run_pretrain

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    snap = tmp_path / "snap"
    shutil.copytree(pretrain_snapshot, snap)
    intact = verify_snapshot(snap)
    monkeypatch.setattr(snapshot_mod, "verify_snapshot", lambda *a, **k: intact)  # the start saw it intact
    flip_byte(shard_of(snap))
    params = load_params(overrides=[*tiny_pretrain_overrides, "pretrain.max_steps=2"])
    with pytest.raises(A2maeError, match=r"shard-00000\.bin: content differs from the sha256"):
        run_pretrain(params, str(snap), name="damaged-later", register=False)
    (run,) = _runs(tmp_path / "mlflow.db")
    assert run.info.status == "FAILED"
