"""Repository foundation: parameters, the torchvision shim, the sensor registry and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from a2mae.cli import main
from a2mae.config import ConfigError, Params, default_params_path, load_params
from a2mae.sensors import SensorRegistryError, load_registry

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_is_complete_and_valid():
    p = load_params()
    assert isinstance(p, Params)
    assert default_params_path() == REPO / "params.yaml"
    assert p.tile.chip_size == 96
    # every section of the issue is present
    assert set(Params.model_fields) == {
        "data",
        "collect",
        "tile",
        "model",
        "pretrain",
        "finetune",
        "benchmark",
        "evaluate",
        "predict",
        "evidence",
        "registry",
        "infra",
    }


def test_partial_user_file_and_overrides(tmp_path):
    user = tmp_path / "p.yaml"
    user.write_text("tile:\n  chip_size: 64\n")
    p = load_params(user, ["tile.grid_m=500", "model.masking=independent"])
    assert p.tile.chip_size == 64 and p.tile.grid_m == 500 and p.model.masking == "independent"
    assert p.tile.max_cloud_fraction == load_params().tile.max_cloud_fraction


@pytest.mark.parametrize(
    ("content", "overrides", "expected"),
    [
        ("tile:\n  chip_size: -3\n", [], "tile.chip_size"),
        ("tile:\n  chip_sise: 96\n", [], "tile.chip_sise: unknown key"),
        ("tiles:\n  chip_size: 96\n", [], "tiles: unknown section"),
        ("tile: [1, 2\n", [], "not valid YAML"),
        ("", ["model.masking=diagonal"], "model.masking"),
        ("", ["model.nope=1"], "unknown key model.nope"),
        ("", ["no_equals_sign"], "expected section.key=value"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(tmp_path, content, overrides, expected):
    user = tmp_path / "bad.yaml"
    user.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_params(user, overrides)
    msg = str(info.value)
    assert expected in msg
    assert "\n" not in msg


def test_cli_bad_params_exit_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tile:\n  chip_size: 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "a2mae", "params", "--params", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "tile.chip_size" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_help_on_every_verb():
    import typer.main

    from a2mae.cli.app import app

    group = typer.main.get_command(app)
    assert group.commands, "no verbs registered"
    env = {**os.environ, "COLUMNS": "80"}
    texts = {}
    for name in ["", *group.commands, "services up"]:
        cmd = [sys.executable, "-m", "a2mae", *name.split(), "--help"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, (name, proc.stderr)
        assert "Usage" in proc.stdout
        # nothing cut at 80 columns: every line fits, no word or sentence is truncated
        assert max(len(line) for line in proc.stdout.splitlines()) <= 80, name
        lines = proc.stdout.splitlines()[1:]  # after the usage line ("COMMAND [ARGS]...")
        assert "…" not in proc.stdout and not any(ln.rstrip().endswith("...") for ln in lines), name
        texts[name] = proc.stdout
    assert "finetune.datasets.<task>" in texts["finetune"]
    assert "finetune.compare_protocols" in texts["finetune"]
    assert "promote only past the margin." in " ".join(texts[""].split())


def test_params_verb_round_trips():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["params", "--set", "tile.chip_size=32"]) == 0
    assert yaml.safe_load(buf.getvalue())["tile"]["chip_size"] == 32


def test_timm_imports_in_a_fresh_process():
    # The .pth hook written by bootstrap makes `import timm` work without importing a2mae first.
    code = (
        "import timm, torch; m = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0);"
        "print(m(torch.zeros(1, 3, 224, 224)).shape)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.Size([1, 192])" in proc.stdout


def test_shim_is_inert_when_torchvision_loads_normally(monkeypatch):
    import torch

    from a2mae import _tvshim

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert _tvshim.needs_shim() is False


def test_builtin_sensor_registry():
    reg = load_registry()
    assert {"S2", "L8", "GF1", "GF2", "NAIP", "TM"} <= set(reg.ids)
    assert [Path(f).name for f in reg.sources] == ["builtin.yaml", "naip.yaml", "landsat_tm.yaml"]
    s2 = reg.get("S2")
    assert set(s2.products) == {"L1C", "L2A", "ARCSI"}
    assert s2.pretrain_bands == ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
    assert s2.bands["B05"].gsd_m == 20 and s2.bands["B02"].gsd_m == 10
    assert s2.band_id("swir16") == "B11" and s2.band_id("b8a") == "B8A"
    l8 = reg.get("L8")
    assert set(l8.products) == {"L1", "C2L2"}
    assert l8.products["C2L2"].scale == pytest.approx(2.75e-5)
    assert l8.band_id("SR_B4") == "B4"
    assert reg.get("GF2").bands["B1"].gsd_m == pytest.approx(3.2)
    naip = reg.get("NAIP")
    assert naip.pretrain_bands == ("B", "G", "R", "NIR") and naip.band_id("nir") == "NIR"
    tm = reg.get("TM")
    assert tm.pretrain_bands == ("B1", "B2", "B3", "B4", "B5", "B7") and tm.band_id("swir22") == "B7"
    assert tm.products["L1"].dn_bits == 8 and tm.products["L1"].scale == pytest.approx(1 / 255)
    for s in reg:
        for group, bands in s.token_groups.items():
            assert bands, (s.id, group)


def test_user_sensor_file_adds_a_sensor(tmp_path, monkeypatch):
    f = tmp_path / "mysat.yaml"
    f.write_text(
        """
sensors:
  MYSAT:
    name: My satellite
    token_groups: {VNIR: [R, N]}
    bands:
      R: {center_nm: 660, bandwidth_nm: 40, gsd_m: 5, group: VNIR}
      N: {center_nm: 840, bandwidth_nm: 80, gsd_m: 5, group: VNIR}
    products:
      L2: {scale: 1.0e-4}
"""
    )
    reg = load_registry([f])
    assert reg.get("MYSAT").pretrain_bands == ("R", "N")
    monkeypatch.setenv("A2MAE_SENSOR_FILES", str(f))
    assert "MYSAT" in load_registry()


def test_bad_sensor_file_names_the_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(
        "sensors:\n  X:\n    name: x\n    token_groups: {VNIR: [Q]}\n"
        "    bands: {}\n    products: {L1: {scale: 1}}\n"
    )
    with pytest.raises(SensorRegistryError, match=r"bad\.yaml: sensors\.X"):
        load_registry([f])
    with pytest.raises(SensorRegistryError, match="unknown sensor 'NOPE'"):
        load_registry().get("NOPE")


def test_a_chip_size_the_model_cannot_patchify_is_refused_when_params_load(capsys):
    patch16 = ["--set", "pretrain.model_overrides={patch_size: 16}"]
    assert main(["params", "--set", "tile.chip_size=40", *patch16]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tile.chip_size 40 is not a multiple of the patch size 16" in err
    assert main(["params", "--set", "tile.chip_size=48", *patch16]) == 0
