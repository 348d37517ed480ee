"""A²-MAE: anchor-aware masked autoencoder for co-located multi-sensor remote-sensing image sets.

The package is importable without torch, Prefect, Ray or MLflow being imported: heavy modules are
loaded by the submodules that need them (``a2mae.models``, ``a2mae.pretrain``, ...).
"""

from __future__ import annotations

from a2mae import _tvshim

__version__ = "0.1.0"

# `import timm` must work wherever a2mae is imported first (see a2mae/_tvshim.py).
_tvshim.install_hook()

__all__ = ["__version__"]
