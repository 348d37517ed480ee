"""Stage 1, ingest: scenes (files, per-band folders, ``s3://`` prefixes) into the scene catalog.

* :mod:`a2mae.ingest.discover` -- group files into scenes, recognise sensor and product.
* :mod:`a2mae.ingest.scene_reader` -- read one scene's metadata (bands, GSDs, footprint, date, cloud).
* :mod:`a2mae.ingest.sidecars` -- metadata from MTL / STAC / SAFE sidecar files.
* :mod:`a2mae.ingest.scene_geometry` -- footprints and corners in WGS84.
* :mod:`a2mae.ingest.period` -- the growth / non-growth label of a date and place.
* :mod:`a2mae.ingest.catalog` -- the scene catalog (Parquet) and its rows.
* :mod:`a2mae.ingest.run` -- ``a2mae ingest``: sources -> catalog.

See ``docs/ingest.md``.
"""
