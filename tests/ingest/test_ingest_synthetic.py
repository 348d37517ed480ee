"""Contract check: ingest reads the synthetic co-located scenes exactly as their generator describes them.

``a2mae.testing.scenes.make_scenes`` writes S2 L2A (SAFE-like folders), L8 C2 L2 (with MTL) and GF-1/2
MS scenes and returns the records the tiling tests use in place of ingest; this test checks that
ingest produces the same records, so the two cannot drift apart. Hashes differ by design (the
generator's own scheme) and the footprint ring is densified by ingest.
"""

from __future__ import annotations

import pytest

from a2mae.config import load_params
from a2mae.ingest.run import ingest
from a2mae.testing.scenes import make_scenes

IGNORED = {"scene_id", "content_hash", "fingerprint", "files", "footprint_wkt", "corners"}


def test_ingest_matches_the_generator(tmp_path):
    expected = {r.source: r for r in make_scenes(tmp_path / "scenes")}
    report = ingest([str(tmp_path / "scenes")], tmp_path / "catalog.parquet", load_params(), progress=False)
    assert not report.failed and not report.ignored
    assert sorted(r.source for r in report.added) == sorted(expected)
    for rec in report.added:
        want = expected[rec.source]
        got_d, want_d = rec.model_dump(exclude=IGNORED), want.model_dump(exclude=IGNORED)
        assert got_d == want_d, rec.source
        assert [c for p in rec.corners for c in p] == pytest.approx(
            [c for p in want.corners for c in p], abs=1e-9
        )
        assert rec.scene_id.rsplit("_", 1)[0] == want.scene_id.rsplit("_", 1)[0]  # sensor_product_date


def test_catalog_matches_finds_a_scene_as_ingest_would(tmp_path, synthetic_scenes):
    import shutil

    from a2mae.ingest.discover import discover
    from a2mae.ingest.run import catalog_matches
    from a2mae.sensors import get_registry
    from a2mae.sensors.detect import band_vocabulary

    l8 = sorted((synthetic_scenes[0] / "L8").iterdir())
    params = load_params(None, ["data.workers=1"])
    catalog = tmp_path / "catalog.parquet"
    assert catalog_matches([], catalog) == {}
    report = ingest([str(l8[0])], catalog, params, progress=False)
    copy = tmp_path / "elsewhere" / l8[0].name  # the same files under another name
    shutil.copytree(l8[0], copy)
    shutil.copytree(l8[1], tmp_path / "elsewhere" / l8[1].name)
    vocab = band_vocabulary(get_registry())
    specs = discover([str(l8[0]), str(tmp_path / "elsewhere")], vocab).scenes
    found = catalog_matches(specs, catalog)
    (record,) = report.added
    assert found[str(l8[0])] == record  # same listing
    assert found[str(copy)] == record  # same content
    assert found[str(tmp_path / "elsewhere" / l8[1].name)] is None  # ingest would add it
    again = ingest([str(tmp_path / "elsewhere")], catalog, params, progress=False)
    assert [r.source for r in again.added] == [str(tmp_path / "elsewhere" / l8[1].name)]
