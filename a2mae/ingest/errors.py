"""The errors of ingest (``a2mae ingest``, ``a2mae catalog``), and the rule they follow.

Rule (every stage package): the errors a user can cause in a stage are declared in its ``errors.py``
and derive from the stage's base error, itself an :class:`~a2mae.errors.A2maeError` (one line, exit
code 2); an error about a bad value or file also derives from ``ValueError``. The modules that raise
them import them from here.
"""

from __future__ import annotations

from a2mae.errors import A2maeError


class IngestError(A2maeError):
    """Bad input to ingest (a file, folder, URI or scene); the message names it and says what to do."""


class CatalogError(IngestError):
    """The catalog cannot be read, or a scene to remove is not in it; the message names it."""


class CatalogRowError(IngestError, ValueError):
    """One stored row does not validate; names its scene id (``a2mae catalog rm`` removes it)."""

    def __init__(self, scene_id: str, reason: str) -> None:
        super().__init__(
            f"scene {scene_id}: {reason}; remove it with `a2mae catalog rm {scene_id}` (or ingest it again)"
        )
        self.scene_id = scene_id


class CatalogDuplicates(IngestError):
    """A catalog holds two different rows for one scene or one source file."""
