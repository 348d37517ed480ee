"""STSSD data layer: scene catalog, co-located image-set tiling, snapshots and the torch dataset."""
