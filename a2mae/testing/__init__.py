"""Synthetic data for tests, benchmarks and trials (no part of the pipeline imports this package).

* :mod:`a2mae.testing.scenes` -- co-located synthetic S2 / L8 / GF GeoTIFF scenes and their catalog.
* :mod:`a2mae.testing.batches` -- synthetic image sets and batches in memory.
"""
