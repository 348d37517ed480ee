"""Promotion flow: a person moves (or rolls back) the champion alias from the Prefect UI.

Calls :func:`a2mae.registry.aliases.promote` / :func:`~a2mae.registry.aliases.rollback`, the functions
behind ``a2mae promote`` and ``a2mae rollback``; the reason is kept in the model's alias history. A
new champion emits ``a2mae.model.promoted`` (the ``predict/on-promotion`` deployment follows it).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import emit_promoted, link_mlflow, log, params_from
from flows.params import PromoteParams


@task(name="move-alias", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def move_alias(doc: dict[str, Any], model: str, version: int, action: str, reason: str) -> dict[str, Any]:
    """Promote ``version`` (0: the challenger) or roll back to the previous champion; returns the event.

    Raises:
        RegistryError: No such model, or version 0 and no challenger alias (one line).
    """
    from a2mae.registry import aliases
    from a2mae.registry.errors import RegistryError
    from a2mae.tracking.client import client

    p = params_from(doc)
    c = client(p.registry)
    alias = p.registry.champion_alias
    if action == "rollback":
        e = aliases.rollback(c, model, alias, reason)
    else:
        if not version:
            challenger = aliases.current(c, model, p.evaluate.challenger_alias)
            if challenger is None:
                raise RegistryError(
                    f"model {model}: no version holds @{p.evaluate.challenger_alias}; give the version to "
                    "promote"
                )
            version = int(challenger.version)
        e = aliases.promote(c, model, version, alias, reason)
    return {"model": model, "alias": alias, "version": e.version, "previous": e.previous, "action": e.action}


@flow(name="promote", log_prints=True)
def promote_flow(params: PromoteParams) -> dict[str, Any]:
    """Move the champion alias of a registered model by hand.

    Args:
        params: Model, version, promote or rollback, and the reason.

    Returns:
        The alias event (new and previous champion version).
    """
    from a2mae.tracking.client import tracking_uri

    p = params.resolve()
    doc = p.model_dump(mode="json")
    e = move_alias(doc, params.model, params.version, params.action, params.reason)
    link_mlflow(
        "promote-model",
        tracking_uri(p.registry),
        f"#/models/{e['model']}/versions/{e['version']}",
        f"{e['model']} @{e['alias']}",
    )
    log(f"{params.action}: {e['model']} @{e['alias']} -> v{e['version']} (was {e['previous'] or 'unset'})")
    if e["version"] != e["previous"]:
        emit_promoted(e["model"], e["version"], action=params.action, reason=params.reason)
    return e
