"""What every MLflow run of the pipeline says about itself: a readable description and where it ran.

Each stage gives its runs a name and a description (the MLflow tag ``mlflow.note.content``, shown as the
run page's "Description", markdown). A caller that knows more about where the work runs -- a Prefect
flow run -- says so with :func:`run_context`; every run created or resumed inside gets its tags (the flow
run's id, name and URL) and a line linking back to it in the description.

The context is process-wide (Prefect may run a task in another thread than its flow) and nests.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

#: The MLflow tag holding a run's description (markdown, on the run page).
NOTE_TAG = "mlflow.note.content"

_stack: list[tuple[dict[str, str], str]] = []
_lock = threading.Lock()


@contextlib.contextmanager
def run_context(tags: Mapping[str, str], note: str = "") -> Iterator[None]:
    """While inside, MLflow runs created (or resumed) by the stages get ``tags`` and ``note``.

    Args:
        tags: Tags for every run (e.g. ``a2mae.prefect.flow_run_url``).
        note: A markdown line appended to every run's description (e.g. a link to the flow run).
    """
    item = ({str(k): str(v) for k, v in tags.items() if v is not None}, note)
    with _lock:
        _stack.append(item)
    try:
        yield
    finally:
        with _lock:
            _stack.remove(item)


def context_tags() -> dict[str, str]:
    """The tags of the current context (inner contexts win), empty outside any."""
    out: dict[str, str] = {}
    with _lock:
        for tags, _ in _stack:
            out.update(tags)
    return out


def describe(summary: str, *details: str) -> str:
    """A run description: a summary sentence, detail lines, and the context's lines (markdown)."""
    with _lock:
        notes = [note for _, note in _stack if note]
    lines = [summary.strip(), *(f"- {d}" for d in details if d)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def description_tags(summary: str, *details: str) -> dict[str, str]:
    """``{NOTE_TAG: describe(...)}`` plus the context's tags: what a new run gets besides its lineage."""
    return {**context_tags(), NOTE_TAG: describe(summary, *details)}
