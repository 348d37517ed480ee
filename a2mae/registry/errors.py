"""Errors of the model registry."""

from __future__ import annotations

from a2mae.errors import A2maeError


class RegistryError(A2maeError, ValueError):
    """A model, version or alias of the registry is missing or unusable; the message names it."""
