"""The errors of the downstream tasks (their datasets), and the rule they follow.

Rule (every stage package): the errors a user can cause in a stage are declared in its ``errors.py``
and derive from the stage's base error, itself an :class:`~a2mae.errors.A2maeError` (one line, exit
code 2); an error about a bad value or file also derives from ``ValueError``. The modules that raise
them import them from here.
"""

from __future__ import annotations

from a2mae.errors import A2maeError


class DatasetError(A2maeError, ValueError):
    """A downstream dataset is malformed; the message names the file and what to fix."""


class EmptySplitError(DatasetError):
    """A requested split of a downstream dataset has no example."""


class UnknownTaskError(DatasetError):
    """No task of that name is registered; the message lists the known ones."""
