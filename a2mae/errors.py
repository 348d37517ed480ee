"""Errors a user can cause and fix. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class A2maeError(Exception):
    """Base class of errors caused by the user's input (files, parameters, endpoints).

    The message must name the file, URI or key involved and say what to do; it is shown without a
    traceback. Programming errors are never wrapped in this class.
    """

    exit_code: int = 2
