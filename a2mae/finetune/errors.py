"""The errors of fine-tuning (``a2mae finetune``, ``a2mae ablate``), and the rule they follow.

Rule (every stage package): the errors a user can cause in a stage are declared in its ``errors.py``
and derive from the stage's base error, itself an :class:`~a2mae.errors.A2maeError` (one line, exit
code 2); an error about a bad value or file also derives from ``ValueError``. The modules that raise
them import them from here.
"""

from __future__ import annotations

from a2mae.errors import A2maeError


class FinetuneError(A2maeError, ValueError):
    """The stage base: fine-tuning cannot run with its inputs; one line says why."""


class EncoderError(FinetuneError):
    """The encoder URI does not resolve to an A²-MAE encoder; the message names it."""


class AblationError(FinetuneError):
    """The ablation cannot run (unknown variant name, no snapshot)."""
