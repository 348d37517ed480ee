"""Make PyPI's CUDA-built torchvision importable next to a CPU-only torch.

PyPI offers no CPU build of torchvision. ``torchvision==0.28.0`` (the match for torch 2.13) is a
CUDA 13 build whose ``_C.so`` links against ``libtorch_cuda.so``; next to the CPU torch that library
does not exist, the extension fails to load silently, and ``torchvision/_meta_registrations.py``
then raises ``RuntimeError: operator torchvision::nms does not exist`` -- so ``import timm`` fails.

The fix: before torchvision is imported, define the two operator schemas it registers fake kernels
for (``nms``, ``qnms``) and give ``nms`` a small CPU kernel. Everything pure-Python in torchvision
(transforms, models) and all of timm then work. Nothing is done when torch is a CUDA build or when
torchvision's extension loads normally, so a healthy machine is untouched.

Two entry points install a lazy import hook (it imports nothing until ``torchvision`` is imported):
``import a2mae`` and a ``.pth`` file in site-packages (``python -m a2mae._tvshim --install-pth``, run
by ``scripts/bootstrap.sh``), which covers every process of the venv: CLI, tests, Ray workers and
Prefect subprocesses that import timm before a2mae.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import sys
from typing import Any

_APPLIED = False
_LIB: Any = None
PTH_NAME = "a2mae_tvshim.pth"


def _nms_cpu(dets: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression on CPU.

    Args:
        dets: Boxes ``[N, 4]`` as (x1, y1, x2, y2).
        scores: Scores ``[N]``.
        iou_threshold: Boxes overlapping a kept box above this IoU are dropped.

    Returns:
        Indices ``[K]`` (int64) of the kept boxes, by decreasing score.
    """
    import torch

    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    suppressed = torch.zeros(dets.size(0), dtype=torch.bool)
    for i in scores.argsort(descending=True).tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        inter = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0) * (
            torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)
        ).clamp(min=0)
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def needs_shim() -> bool:
    """Whether the installed torchvision is a CUDA build sitting next to a CPU-only torch."""
    try:
        tv_version = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return False
    import torch

    if torch.version.cuda is not None:
        return False  # a CUDA torch: torchvision's own extension is the right one
    return "+cu" in tv_version or _extension_unloadable()


def _extension_unloadable() -> bool:
    import glob
    import importlib.util
    import os

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    libs = glob.glob(os.path.join(next(iter(spec.submodule_search_locations)), "_C*.so"))
    if not libs:
        return False
    import ctypes

    try:
        ctypes.CDLL(libs[0])
    except OSError:
        return True
    return False


def ensure() -> bool:
    """Apply the fix if (and only if) this machine needs it. Call before the first torchvision import.

    Returns:
        True when the operator schemas were defined by this call or an earlier one.
    """
    global _APPLIED, _LIB
    if _APPLIED:
        return True
    if "torchvision" in sys.modules or not needs_shim():
        return False
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", _nms_cpu, "CPU")
    _LIB = lib  # the Library object must stay alive for the definitions to persist
    _APPLIED = True
    return True


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure` the first time ``torchvision`` is imported, then steps aside."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torchvision":
            uninstall_hook()
            ensure()
        return None


def install_hook() -> None:
    """Install the lazy import hook (cheap: imports nothing now)."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _LazyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LazyFinder())


def uninstall_hook() -> None:
    """Remove the lazy import hook."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _LazyFinder)]


def install_pth() -> str:
    """Write the ``.pth`` file that installs the hook at every interpreter start of this environment.

    Returns:
        The path written.
    """
    import os
    import sysconfig

    path = os.path.join(sysconfig.get_paths()["purelib"], PTH_NAME)
    line = "import a2mae._tvshim as _a2mae_tvshim; _a2mae_tvshim.install_hook()\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(line)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    if "--install-pth" in sys.argv:
        print(f"[bootstrap] torchvision import hook: {install_pth()}", file=sys.stderr)
    else:
        print(f"needs_shim={needs_shim()}")
