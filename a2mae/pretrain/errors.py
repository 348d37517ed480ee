"""The errors of pre-training (``a2mae pretrain``), and the rule they follow.

Rule (every stage package): the errors a user can cause in a stage are declared in its ``errors.py``
and derive from the stage's base error, itself an :class:`~a2mae.errors.A2maeError` (one line, exit
code 2); an error about a bad value or file also derives from ``ValueError``. The modules that raise
them import them from here.
"""

from __future__ import annotations

from a2mae.errors import A2maeError


class PretrainError(A2maeError):
    """Pre-training failed (after Ray's restarts) or its input cannot be used."""


class NonFiniteLossError(PretrainError):
    """Training diverged: the loss was NaN/inf for too many consecutive steps."""


class RayClusterError(PretrainError):
    """Ray cannot be started or reached, or lacks the resources the run asks for."""


class CheckpointMismatch(PretrainError):
    """A checkpoint holds another model than the one it is loaded into (one line)."""
