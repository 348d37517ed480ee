"""The ``@champion`` alias with its history: promote, rollback, and who held it when.

Every move of the alias appends an event to the registered-model tag ``a2mae.champion_history`` (a
JSON list, kept whole) and stamps the versions involved (``a2mae.champion_from`` /
``a2mae.champion_until``, UTC ISO times). Events::

    {"action": "auto" | "manual" | "rollback", "version": "3", "previous": "2" | null,
     "at": "2026-...Z", "reason": "...", "run_id": "..." | null}

The *champion stack* replays the events: ``auto``/``manual`` push a version, ``rollback`` pops one, so
:func:`rollback` returns to whichever version was champion before the current one, and repeated
rollbacks walk further back. Concurrent moves of the same model are not serialised (last writer wins).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from a2mae.registry.errors import RegistryError

HISTORY_TAG = "a2mae.champion_history"
FROM_TAG = "a2mae.champion_from"
UNTIL_TAG = "a2mae.champion_until"


@dataclass(frozen=True)
class AliasEvent:
    """One move of the champion alias."""

    action: str
    version: str
    previous: str | None
    at: str
    reason: str
    run_id: str | None = None


def now_iso() -> str:
    """UTC now, ISO 8601 with a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_not_found(err: Exception) -> bool:
    code = getattr(err, "error_code", "")
    return "RESOURCE_DOES_NOT_EXIST" in str(code) or "not found" in str(err).lower()


def get_version(client: Any, name: str, version: str | int) -> Any:
    """The model version, or a :class:`RegistryError` naming it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as err:
        if _is_not_found(err):
            raise RegistryError(f"model {name} version {version}: not in the registry") from None
        raise


def current(client: Any, name: str, alias: str) -> Any | None:
    """The version holding ``alias``, or None when the alias is unset.

    Raises:
        RegistryError: The registered model does not exist.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if _is_not_found(err):
            raise RegistryError(
                f"model {name}: not in the registry (fine-tune and register a version first)"
            ) from None
        raise
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if _is_not_found(err) or "alias" in str(err).lower():
            return None
        raise


def history(client: Any, name: str) -> list[AliasEvent]:
    """The champion history of a registered model (oldest first)."""
    rm = client.get_registered_model(name)
    raw = (rm.tags or {}).get(HISTORY_TAG)
    if not raw:
        return []
    return [AliasEvent(**e) for e in json.loads(raw)]


def champion_stack(events: list[AliasEvent]) -> list[str]:
    """Replay the history: versions that were champion, the current one last."""
    stack: list[str] = []
    for e in events:
        if e.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != e.version:
                stack.append(e.version)
        else:
            stack.append(e.version)
    return stack


def move(
    client: Any, name: str, version: str, alias: str, action: str, reason: str, run_id: str | None = None
) -> AliasEvent:
    """Point ``alias`` at ``version``, stamp both versions and append the event to the history."""
    get_version(client, name, version)
    prev = current(client, name, alias)
    at = now_iso()
    client.set_registered_model_alias(name, alias, str(version))
    if prev is not None and str(prev.version) != str(version):
        client.set_model_version_tag(name, str(prev.version), UNTIL_TAG, at)
    client.set_model_version_tag(name, str(version), FROM_TAG, at)
    event = AliasEvent(action, str(version), None if prev is None else str(prev.version), at, reason, run_id)
    events = [*history(client, name), event]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([asdict(e) for e in events]))
    return event


def promote(client: Any, name: str, version: str | int, alias: str, reason: str) -> AliasEvent:
    """Manual promotion of a version (with a reason, recorded in the history).

    Raises:
        RegistryError: Empty reason, unknown model or version.
    """
    if not reason.strip():
        raise RegistryError("promote: give a --reason (it is kept in the alias history)")
    v = get_version(client, name, version)
    client.set_model_version_tag(name, str(v.version), "a2mae.promotion_reason", reason)
    return move(client, name, str(v.version), alias, "manual", reason)


def rollback(client: Any, name: str, alias: str, reason: str = "") -> AliasEvent:
    """Move ``alias`` back to the previous champion of the history.

    Raises:
        RegistryError: No champion, no earlier champion, or the alias was moved outside a2mae.
    """
    cur = current(client, name, alias)
    if cur is None:
        raise RegistryError(f"model {name}: no @{alias} to roll back")
    stack = champion_stack(history(client, name))
    if not stack or stack[-1] != str(cur.version):
        raise RegistryError(
            f"model {name}: @{alias} is version {cur.version} but the a2mae history ends at "
            f"{stack[-1] if stack else 'nothing'}; it was moved outside a2mae; use `a2mae promote`"
        )
    if len(stack) < 2:
        raise RegistryError(
            f"model {name}: version {cur.version} is the first champion; nothing to roll back to"
        )
    target = stack[-2]
    return move(client, name, target, alias, "rollback", reason or f"rollback from version {cur.version}")
