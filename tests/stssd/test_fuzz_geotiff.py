"""The fault-and-fuzz test of ingest and tile: random valid and corrupted GeoTIFFs (trust issue).

Hypothesis writes a Gaofen-2-like GeoTIFF varying the pixel type, nodata (none, a value, NaN), values
(DNs, reflectance, NaN/inf), declared scale/offset, compression, band count, size, geotransform
(north-up, rotated, flipped), date tag, and corruption (truncation, flipped bytes, junk, empty), then
runs ``a2mae ingest`` and ``a2mae tile`` (the CLI, in process). Every case ends one of two ways:

* success: every stored chip equals the documented rule applied to a plain rasterio read of the source
  (:func:`a2mae.testing.rasters.reference_chip`), and its nodata fraction is the reference's;
* a refusal: exit code 2, exactly one line on stderr, and nothing left behind (no catalog, snapshot,
  temporary or lock file).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from a2mae.cli import main
from a2mae.ingest.catalog import read_catalog
from a2mae.testing.rasters import GF2_NAME, GF2_ORIGIN, reference_chip, stored_chips, write_scene

CHIP = 16


@dataclass(frozen=True)
class Case:
    dtype: str
    bands: int
    width: int
    height: int
    gsd: float
    shape: str  # north-up | rotated | flipped
    nodata: str  # none | zero | value | nan
    values: str  # dn | reflectance | huge
    holes: float  # share of NaN/inf (floats) or nodata (declared) pixels
    declared_scale: bool
    compress: str
    date: str  # none | valid | junk
    corruption: str  # none | truncate | flip-header | flip-body | junk | empty
    seed: int


INT_TYPES = ("uint8", "uint16", "int16", "uint32", "int32")
FLOAT_TYPES = ("float32", "float64")


@st.composite
def cases(draw) -> Case:
    dtype = draw(st.sampled_from(INT_TYPES + FLOAT_TYPES))
    floats = dtype in FLOAT_TYPES
    compress = draw(
        st.sampled_from(
            ["none", "deflate", "lzw", "jpeg"] if dtype == "uint8" else ["none", "deflate", "lzw"]
        )
    )
    return Case(
        dtype=dtype,
        bands=draw(st.sampled_from([4] * 7 + [3])),
        width=draw(st.one_of(st.integers(24, 64), st.integers(24, 64), st.integers(4, 23))),
        height=draw(st.one_of(st.integers(24, 64), st.integers(24, 64), st.integers(4, 23))),
        gsd=draw(st.sampled_from([3.2, 3.2, 0.8, 10.0])),
        shape=draw(st.sampled_from(["north-up"] * 6 + ["rotated", "flipped"])),
        nodata=draw(st.sampled_from(["none", "zero", "value"] + (["nan"] if floats else []))),
        values=draw(st.sampled_from(["dn", "dn", "huge"] + (["reflectance"] * 2 if floats else []))),
        holes=draw(st.sampled_from([0.0, 0.0, 0.1, 0.6, 1.0])),
        declared_scale=draw(st.booleans()),
        compress=compress,
        date=draw(st.sampled_from(["none", "none", "valid", "junk"])),
        corruption=draw(
            st.sampled_from(["none"] * 6 + ["truncate", "flip-header", "flip-body", "junk", "empty"])
        ),
        seed=draw(st.integers(0, 2**16)),
    )


def _pixels(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
    shape = (case.bands, case.height, case.width)
    info = np.iinfo(case.dtype) if case.dtype in INT_TYPES else None
    if case.values == "reflectance":
        data = rng.random(shape) * 0.8
    elif case.values == "huge":
        data = rng.random(shape) * (float(info.max) if info is not None else 1e30)
    else:
        hi = min(float(info.max), 12000.0) if info is not None else 12000.0
        data = 1 + rng.random(shape) * (hi - 1)
    data = data.astype(case.dtype)
    nodata = {"none": None, "zero": 0.0, "nan": float("nan")}.get(case.nodata, float(data.flat[0]))
    if case.holes:
        hole = rng.random(shape[1:]) < case.holes
        if case.dtype in FLOAT_TYPES:
            data[:, hole] = rng.choice([np.nan, np.inf, -np.inf])
        elif nodata is not None:
            data[:, hole] = nodata
    return data, nodata


def _transform(case: Case) -> Affine:
    x, y, g = GF2_ORIGIN[0], GF2_ORIGIN[1], case.gsd
    if case.shape == "rotated":
        return Affine(g, 0.3 * g, x, 0.2 * g, -g, y)
    if case.shape == "flipped":
        return Affine(g, 0, x, 0, g, y)
    return Affine(g, 0, x, 0, -g, y)


def _corrupt(path: Path, how: str, rng: np.random.Generator) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: int(len(data) * rng.uniform(0.05, 0.95))]
    elif how == "flip-header":
        for k in rng.integers(8, min(400, len(data)), 3):
            data[k] ^= 1 << int(rng.integers(0, 8))
    elif how == "flip-body":
        for k in rng.integers(len(data) // 2, len(data), 4):
            data[k] ^= 0xFF
    elif how == "junk":
        data = bytearray(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


def write_case(case: Case, folder: Path) -> Path:
    rng = np.random.default_rng(case.seed)
    data, nodata = _pixels(case, rng)
    tags = {"none": None, "valid": {"ACQUISITION_TIME": "2020-01-01T03:00:00"}}.get(
        case.date, {"ACQUISITION_TIME": "not-a-date"}
    )
    extra = {} if case.compress == "none" else {"compress": case.compress}
    scale = (1e-4,) * case.bands if case.declared_scale else None
    path = write_scene(
        folder / GF2_NAME, data, nodata=nodata, transform=_transform(case), scales=scale, tags=tags, **extra
    )
    if case.corruption != "none":
        _corrupt(path, case.corruption, rng)
    return path


def _effective_nodata(rec) -> float | None:
    values = {bf.nodata for bf in rec.band_files}
    assert len(values) == 1
    return values.pop()


def check_case(case: Case, capsys) -> str:
    """Run one case; returns how it ended (for the tally in the module docstring's terms)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_case(case, root / "in")
        cat, out = root / "catalog.parquet", root / "stssd"
        code = main(["ingest", str(source.parent), "--catalog", str(cat), "--no-progress"])
        cap = capsys.readouterr()
        if code != 0:
            return _refusal(code, cap.err, root, "ingest")
        grid = f"tile.grid_m={case.gsd * 5:g}"
        args = ["tile", "--catalog", str(cat), "--out", str(out), "--no-progress", "--set", grid]
        args += [
            "--set",
            f"tile.chip_size={CHIP}",
            "--set",
            "tile.workers=1",
            "--set",
            "tile.max_nodata_fraction=1",
            "--set",
            "tile.thin_coarse_sets=false",
        ]
        code = main(args)
        cap = capsys.readouterr()
        if code != 0:
            return _refusal(code, cap.err, root, "tile", keep={"catalog.parquet"})
        (rec,) = read_catalog(cat)
        with rasterio.open(source) as ds:
            src = ds.read()
        nodata = _effective_nodata(rec)
        chips = stored_chips(out)
        for row, chip in chips:
            r0, c0 = row["row0"], row["col0"]
            want = reference_chip(src[:, r0 : r0 + CHIP, c0 : c0 + CHIP], rec.scale, rec.offset, nodata)
            np.testing.assert_array_equal(chip, want, err_msg=f"{case} {row['image_id']}")
            assert row["nodata_fraction"] == pytest.approx(float((want[0] == -32768).mean()))
        return f"tiled ({len(chips)} chips)" if chips else "tiled (no chip kept)"


def _refusal(
    code: int, err: str, root: Path, verb: str, keep: frozenset[str] | set[str] = frozenset()
) -> str:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("a2mae: error: "), err
    left = {p.name for p in root.iterdir()} - {"in"} - set(keep)
    assert not left, f"left behind after a refused {verb}: {left}"
    return f"{verb} refused: {lines[0][len('a2mae: error: ') :]}"


def kind_of_end(end: str) -> str:
    """The kind of an end, for ``--hypothesis-show-statistics``: the message without paths or numbers."""
    if end.startswith("tiled"):
        return "tiled" if "no chip" not in end else "tiled, no chip kept"
    verb, _, message = end.partition(" refused: ")
    while message.startswith("/") or message.startswith("scene "):
        message = message.partition(": ")[2]
    message = message.split(";")[0].split(" (")[0]  # the kind, without the details in brackets
    return f"{verb} refused: " + "".join("#" if c.isdigit() else c for c in message)[:70]


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@settings(FUZZ, max_examples=40, derandomize=True)
@given(case=cases())
def test_random_geotiffs_are_tiled_exactly_or_refused_in_one_line(case, capsys):
    event(kind_of_end(check_case(case, capsys)))


@pytest.mark.slow
@settings(FUZZ, max_examples=400)
@given(case=cases())
def test_random_geotiffs_many(case, capsys):
    event(kind_of_end(check_case(case, capsys)))


def test_each_kind_of_case_once(capsys):
    """One case of each corruption and pixel kind, so that each path runs in every suite."""
    base = Case("uint16", 4, 40, 40, 3.2, "north-up", "zero", "dn", 0.0, False, "deflate", "none", "none", 1)
    variants = [
        base,
        base.__class__(
            **{**base.__dict__, "dtype": "float32", "values": "reflectance", "nodata": "nan", "holes": 0.6}
        ),
        base.__class__(**{**base.__dict__, "dtype": "uint8", "compress": "jpeg", "declared_scale": True}),
        base.__class__(**{**base.__dict__, "dtype": "uint8"}),
        base.__class__(**{**base.__dict__, "shape": "rotated"}),
        *(
            base.__class__(**{**base.__dict__, "corruption": c})
            for c in ("truncate", "flip-header", "flip-body", "junk", "empty")
        ),
    ]
    ends = [check_case(v, capsys) for v in variants]
    assert ends[0].startswith("tiled") and ends[1].startswith("tiled") and ends[2].startswith("tiled")
    assert "8-bit pixels" in ends[3] and "rotated" in ends[4]
