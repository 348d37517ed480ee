"""Errors of the predict stage."""

from __future__ import annotations

from a2mae.errors import A2maeError


class PredictError(A2maeError, ValueError):
    """Bad input to ``a2mae predict`` (scene, model, output); the message names it and what to do."""


class ModelNotFound(PredictError):
    """The model URI names no registered version (e.g. no ``@champion`` of that task yet)."""
