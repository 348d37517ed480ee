"""``python infra/prefect_server.py server start ...``: the Prefect CLI with one compatibility fix.

Prefect 3.8.8's scheduler inserts scheduled flow runs with an ORM bulk INSERT whose rows carry the
``FlowRun.state`` hybrid property. SQLAlchemy 2.0 ignored such keys; SQLAlchemy 2.1 (2.1.9 is in our
lock) raises "Can't evaluate bulk DML statement; please supply a bulk_dml decorated function", so no
cron or interval schedule ever produces a run. The scheduler inserts the states itself right after,
so the fix gives the hybrid a bulk-DML hook that does nothing, which is SQLAlchemy 2.0's behaviour.
It applies only when the hook is missing (a fixed Prefect or SQLAlchemy 2.0 is left alone). Remove
this file once the lock pins SQLAlchemy below 2.1 or Prefect ships the hook.
"""

from __future__ import annotations

import sys
from typing import Any


def _ignore_state(cls: Any, mapping: dict[str, Any], value: Any) -> None:
    """Bulk INSERT of flow runs: the state rows are written separately by the caller."""


def patch_scheduler() -> bool:
    """Give ``FlowRun.state`` a no-op bulk-DML hook when SQLAlchemy wants one; True when patched."""
    from prefect.server.database import orm_models

    hybrid = orm_models.FlowRun.__dict__.get("state")
    if hybrid is None or getattr(hybrid, "bulk_dml_setter", "n/a") is not None:
        return False
    hybrid.bulk_dml_setter = _ignore_state
    return True


def main() -> None:
    """Patch, then hand the command line to the Prefect CLI."""
    patch_scheduler()
    from prefect.cli import app

    sys.argv = ["prefect", *sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
