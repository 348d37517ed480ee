"""Stage 2, STSSD: co-located image sets cut from the catalog's scenes into a versioned snapshot.

* :mod:`a2mae.stssd.grouping` -- the plan: grid points, co-located scenes, set composition, splits.
* :mod:`a2mae.stssd.chips` -- reading chips around shared centres, encoding, drop rules, statistics.
* :mod:`a2mae.stssd.packing` -- shard tasks (whole blocks of grid points) and writing one shard.
* :mod:`a2mae.stssd.snapshot` -- the snapshot's files: manifest, statistics, ``snapshot.json``.
* :mod:`a2mae.stssd.dataset` -- the torch dataset over a snapshot.
* :mod:`a2mae.stssd.run` -- ``a2mae tile``: catalog -> snapshot.

See ``docs/stssd.md``.
"""
