"""Errors of the model registry."""

from __future__ import annotations

from a2mae.errors import A2maeError


class RegistryError(A2maeError, ValueError):
    """A model, version or alias of the registry is missing or unusable; the message names it."""


class RegistryBusyError(RegistryError):
    """The history of a model stayed locked by another writer, or this writer lost its lock."""

    exit_code = 1


class HistoryBrokenError(RegistryError):
    """The alias history of a model fails its integrity check; the message names the first break."""

    exit_code = 1
