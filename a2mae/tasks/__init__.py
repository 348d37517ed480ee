"""Downstream tasks: one module, one :class:`~a2mae.tasks.base.Task` object each, and their registry.

Built in: :mod:`~a2mae.tasks.classification`, :mod:`~a2mae.tasks.segmentation` and
:mod:`~a2mae.tasks.change` (change detection). Importing this package registers them; generic code
asks :func:`get` for the task object of a name and never compares names. ``docs/finetune.md`` shows
how to add a task.
"""

from __future__ import annotations

# Each module registers its task when imported: this order is that of the CLI help and the UI dropdown.
# isort: off
from a2mae.tasks import classification
from a2mae.tasks import segmentation
from a2mae.tasks import change

# isort: on
from a2mae.tasks.base import (
    DatasetOptions,
    Task,
    UnknownTaskError,
    find,
    get,
    names,
    open_dataset,
    register,
    unregister,
)

__all__ = [
    "DatasetOptions",
    "Task",
    "UnknownTaskError",
    "change",
    "classification",
    "find",
    "get",
    "names",
    "open_dataset",
    "register",
    "segmentation",
    "unregister",
]
