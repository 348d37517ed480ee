#!/usr/bin/env python
"""Generate small co-located synthetic scenes (S2 L2A, L8 C2 L2, GF1, GF2) and their scene catalog.

Usage::

    .venv/bin/python scripts/make_synthetic_scenes.py OUT_DIR [--scale 1.0] [--seed 0] [--lat LAT --lon LON]

Writes ``OUT_DIR/{S2,L8,GF1,GF2}/...`` in the archives' own layouts (see ``a2mae/testing/scenes.py``)
and ``OUT_DIR/catalog.parquet`` (the records the generator knows exactly; ``a2mae ingest OUT_DIR``
builds the same kind of catalog from the files). Then, for example::

    a2mae tile --catalog OUT_DIR/catalog.parquet --out OUT_DIR/stssd
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, write the scenes and the catalog; return the exit code."""
    from a2mae.ingest.catalog import write_catalog
    from a2mae.testing.scenes import Place, default_specs, make_scenes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every scene extent (1: 1.6-7.2 km)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the ground field")
    ap.add_argument("--lat", type=float, default=30.5)
    ap.add_argument("--lon", type=float, default=114.3)
    args = ap.parse_args(argv)
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        print(f"make_synthetic_scenes: {args.out_dir} is not empty; choose an empty folder", file=sys.stderr)
        return 2
    place = Place(lat=args.lat, lon=args.lon, seed=args.seed)
    records = make_scenes(args.out_dir, default_specs(args.scale), place)
    write_catalog(records, args.out_dir / "catalog.parquet")
    for r in records:
        print(f"{r.scene_id:32s} {r.period:2s} {r.gsd_m:5g} m  {r.width}x{r.height}  {r.source}")
    print(f"{len(records)} scenes; catalog {args.out_dir / 'catalog.parquet'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
