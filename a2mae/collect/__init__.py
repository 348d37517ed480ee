"""Stage 0 of the pipeline: gather co-located scenes from a STAC API into the scene catalog.

``a2mae collect`` searches a STAC API (pystac-client) at sampled locations for each sensor's
collection and each growth period, keeps the best scenes and writes them into the same catalog
``a2mae ingest`` writes, with the remote COG hrefs as band files: ``a2mae tile`` then reads only the
chip windows. The mapping of STAC item properties onto the sensor registry is data: one YAML file per
collection (``a2mae/collect/collections/``). See ``docs/collect.md``.
"""
