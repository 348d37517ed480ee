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

IGNORED = {"scene_id", "content_hash", "fingerprint", "footprint_wkt", "corners"}


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
