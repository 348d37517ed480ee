"""The errors of collect (``a2mae collect``, the STAC watcher), and the rule they follow.

Rule (every stage package): the errors a user can cause in a stage are declared in its ``errors.py``
and derive from the stage's base error, itself an :class:`~a2mae.errors.A2maeError` (one line, exit
code 2); an error about a bad value or file also derives from ``ValueError``. The modules that raise
them import them from here.
"""

from __future__ import annotations

from a2mae.errors import A2maeError


class CollectError(A2maeError):
    """A collection file, a location file, an item or the STAC API is unusable; one line says which."""
