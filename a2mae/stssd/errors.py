"""The errors of tiling (``a2mae tile``, STSSD snapshots), and the rule they follow.

Rule (every stage package): the errors a user can cause in a stage are declared in its ``errors.py``
and derive from the stage's base error, itself an :class:`~a2mae.errors.A2maeError` (one line, exit
code 2); an error about a bad value or file also derives from ``ValueError``. The modules that raise
them import them from here.
"""

from __future__ import annotations

from a2mae.errors import A2maeError


class StssdError(A2maeError):
    """The stage base: tiling or a snapshot cannot go on; the message names the input."""


class TilingError(StssdError):
    """The catalog or the output folder is unusable; the message names it and says what to do."""


class ChipReadError(StssdError):
    """A scene cannot be tiled (rotated grid, unreadable file, ...); the message names the scene."""


class SnapshotError(StssdError):
    """A snapshot is missing, incomplete or of an unknown format; the message names it."""
