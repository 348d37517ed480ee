"""The ``@champion`` alias with its history: promote, rollback, and who held it when.

Every move of the alias appends an event to the registered-model tag ``a2mae.champion_history`` (a
JSON list, kept whole) and stamps the versions involved (``a2mae.champion_from`` /
``a2mae.champion_until``, UTC ISO times). Events::

    {"action": "auto" | "manual" | "rollback", "version": "3", "previous": "2" | null,
     "at": "2026-...Z", "reason": "...", "run_id": "..." | null, "seq": 7,
     "by": "user@host pid 123", "digest": "..."}

The *champion stack* replays the events: ``auto``/``manual`` push a version, ``rollback`` pops one, so
:func:`rollback` returns to whichever version was champion before the current one, and repeated
rollbacks walk further back.

Moves of one model are serialised: each is a :func:`transaction` that holds the model's next history
slot (:mod:`a2mae.registry.ledger`, a lock held by the tracking store, so it works across processes and
machines), reads the alias and the history afresh under it, and writes the alias, the stamps and the
history entry before it lets the next writer in. ``seq`` numbers the entries, ``previous`` chains
them, and ``digest`` (sha256 over the entry and the digest before it) makes an edited or removed entry
visible to :func:`verify` (``a2mae history MODEL --verify``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from a2mae.registry import ledger
from a2mae.registry.errors import HistoryBrokenError as HistoryBrokenError  # re-exported
from a2mae.registry.errors import RegistryError

HISTORY_TAG = "a2mae.champion_history"
FROM_TAG = "a2mae.champion_from"
UNTIL_TAG = "a2mae.champion_until"
REASON_TAG = "a2mae.promotion_reason"


@dataclass(frozen=True)
class AliasEvent:
    """One move of the champion alias.

    Attributes:
        action: ``auto`` (the gate of ``a2mae evaluate``), ``manual`` (``a2mae promote``) or ``rollback``.
        version: The version that became champion.
        previous: The champion before (None: the alias was unset).
        at: UTC time of the move (ISO 8601, ``Z``).
        reason: Why.
        run_id: The evaluation run of an ``auto`` move.
        seq: Number of the entry (from its history slot; None in histories written before slots).
        by: Who moved it (``user@host pid N``).
        digest: sha256 (16 hex digits) over the entry and the digest of the entry before it.
    """

    action: str
    version: str
    previous: str | None
    at: str
    reason: str
    run_id: str | None = None
    seq: int | None = None
    by: str | None = None
    digest: str | None = None

    def label(self) -> str:
        """``entry 7 (manual v3 at ... by ...)``, for messages."""
        who = f" by {self.by}" if self.by else ""
        seq = "?" if self.seq is None else self.seq
        return f"entry {seq} ({self.action} v{self.version} at {self.at}{who})"


_FIELDS = {f.name for f in fields(AliasEvent)}


def event_digest(event: AliasEvent, prior: str | None) -> str:
    """The digest of ``event`` chained to ``prior`` (the digest of the entry before; None: first)."""
    doc = {k: v for k, v in asdict(event).items() if k != "digest"}
    text = (prior or "") + json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    """The champion history of a registered model (oldest first).

    Raises:
        HistoryBrokenError: The history tag is not a JSON list of entries.
    """
    rm = client.get_registered_model(name)
    raw = (rm.tags or {}).get(HISTORY_TAG)
    if not raw:
        return []
    try:
        return [AliasEvent(**{k: v for k, v in e.items() if k in _FIELDS}) for e in json.loads(raw)]
    except (ValueError, TypeError, AttributeError) as err:
        raise HistoryBrokenError(
            f"model {name}: registered-model tag {HISTORY_TAG} is not a list of alias events ({err}); "
            "restore it from a backup of the tracking store"
        ) from None


def last_seq(events: list[AliasEvent]) -> int:
    """Number of the last entry (entries written before slots count by position); 0 when empty."""
    return max((e.seq if e.seq is not None else i + 1 for i, e in enumerate(events)), default=0)


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


class Transaction:
    """A move of one model's alias under its history lock; what it reads is current until it ends.

    Attributes:
        client: MLflow client.
        name: Registered model.
        alias: The alias (``registry.champion_alias``).
        events: The history, read under the lock.
        champion: The version holding the alias now (None: unset), read under the lock.
        event: The move written (None until :meth:`move`).
    """

    def __init__(self, client: Any, name: str, alias: str, slot: ledger.Slot) -> None:
        self.client = client
        self.name = name
        self.alias = alias
        self.slot = slot
        self.events = history(client, name)
        cur = current(client, name, alias)
        self.champion: str | None = None if cur is None else str(cur.version)
        self.event: AliasEvent | None = None

    def move(self, version: str, action: str, reason: str, run_id: str | None = None) -> AliasEvent:
        """Point the alias at ``version``, stamp both versions and append the entry to the history.

        Raises:
            RegistryError: Unknown version, or a second move in one transaction.
            RegistryBusyError: The lock was lost before anything was written.
        """
        if self.event is not None:
            raise RegistryError(f"model {self.name}: one move per transaction")
        c, version, prev = self.client, str(version), self.champion
        get_version(c, self.name, version)
        self.slot.check()
        at = now_iso()
        c.set_registered_model_alias(self.name, self.alias, version)
        if prev is not None and prev != version:
            c.set_model_version_tag(self.name, prev, UNTIL_TAG, at)
        c.set_model_version_tag(self.name, version, FROM_TAG, at)
        e = AliasEvent(action, version, prev, at, reason, run_id, self.slot.seq, ledger.holder())
        prior = self.events[-1].digest if self.events else None
        e = AliasEvent(**{**asdict(e), "digest": event_digest(e, prior)})
        doc = json.dumps([asdict(x) for x in [*self.events, e]])
        c.set_registered_model_tag(self.name, HISTORY_TAG, doc)  # the commit point
        self.event, self.champion = e, version
        return e


@contextlib.contextmanager
def transaction(
    client: Any, name: str, alias: str, *, wait_s: float | None = None, lease_s: float | None = None
) -> Iterator[Transaction]:
    """Hold the history lock of ``name`` for one move (see :mod:`a2mae.registry.ledger`).

    ``wait_s`` and ``lease_s`` default to ``ledger.WAIT_S`` and ``ledger.LEASE_S``.

    Raises:
        RegistryError: Unknown model.
        RegistryBusyError: Other writers held the lock for ``wait_s`` seconds.
    """
    current(client, name, alias)  # an unknown model fails here, before any slot is claimed
    slot = ledger.acquire(
        client,
        name,
        lambda: last_seq(history(client, name)),
        wait_s=ledger.WAIT_S if wait_s is None else wait_s,
        lease_s=ledger.LEASE_S if lease_s is None else lease_s,
    )
    try:
        tx = Transaction(client, name, alias, slot)
        yield tx
    except BaseException:
        slot.finish("released")
        raise
    if tx.event is None:
        slot.finish("released")
    else:
        slot.finish("committed", json.dumps(asdict(tx.event)))


def move(
    client: Any, name: str, version: str, alias: str, action: str, reason: str, run_id: str | None = None
) -> AliasEvent:
    """Point ``alias`` at ``version`` in a transaction of its own (see :meth:`Transaction.move`)."""
    with transaction(client, name, alias) as tx:
        return tx.move(version, action, reason, run_id)


def promote(client: Any, name: str, version: str | int, alias: str, reason: str) -> AliasEvent:
    """Manual promotion of a version (with a reason, recorded in the history).

    Raises:
        RegistryError: Empty reason, unknown model or version.
        RegistryBusyError: The history stayed locked by other writers.
    """
    if not reason.strip():
        raise RegistryError("promote: give a --reason (it is kept in the alias history)")
    v = str(get_version(client, name, version).version)
    with transaction(client, name, alias) as tx:
        client.set_model_version_tag(name, v, REASON_TAG, reason)
        return tx.move(v, "manual", reason)


def rollback(client: Any, name: str, alias: str, reason: str = "") -> AliasEvent:
    """Move ``alias`` back to the previous champion of the history (both read under the lock).

    Raises:
        RegistryError: No champion, no earlier champion, or the alias was moved outside a2mae.
        RegistryBusyError: The history stayed locked by other writers.
    """
    with transaction(client, name, alias) as tx:
        cur = tx.champion
        if cur is None:
            raise RegistryError(f"model {name}: no @{alias} to roll back")
        stack = champion_stack(tx.events)
        if not stack or stack[-1] != cur:
            raise RegistryError(
                f"model {name}: @{alias} is version {cur} but the a2mae history ends at "
                f"{stack[-1] if stack else 'nothing'}; it was moved outside a2mae; use `a2mae promote`"
            )
        if len(stack) < 2:
            raise RegistryError(f"model {name}: version {cur} is the first champion; nothing to roll back to")
        return tx.move(stack[-2], "rollback", reason or f"rollback from version {cur}")


def chain_break(events: list[AliasEvent]) -> str | None:
    """The first break of the history, in words; None when it is whole.

    Checked: numbers strictly increase (entries without one only before the first numbered one), each
    entry's ``previous`` is the version of the entry before, each digest matches its entry and the one
    before it.
    """
    prior: AliasEvent | None = None
    for i, e in enumerate(events):
        where = (
            e.label()
            if e.seq is not None
            else f"entry at position {i + 1} ({e.action} v{e.version} at {e.at})"
        )
        if prior is not None:
            if prior.seq is not None and (e.seq is None or e.seq <= prior.seq):
                return f"{where} is numbered {e.seq} after {prior.label()}: entries are out of order"
            if e.previous != prior.version:
                was = f"v{e.previous}" if e.previous else "unset"
                return f"{where} says the champion was {was}, but {prior.label()} made it v{prior.version}"
        if e.digest is not None and e.digest != event_digest(e, prior.digest if prior else None):
            return f"{where} does not match its digest: it or an entry before it was edited or removed"
        prior = e
    return None


def verify(client: Any, name: str, alias: str) -> str:
    """Check the integrity of ``name``'s history; returns a one-line summary.

    Beyond :func:`chain_break`: the alias must hold the version of the last entry, and every committed
    history slot (a move that reported success) must have its entry in the history.

    Raises:
        RegistryError: Unknown model.
        HistoryBrokenError: The first break, named.
    """
    cur = current(client, name, alias)
    events = history(client, name)
    broken = chain_break(events)
    held = None if cur is None else str(cur.version)
    if broken is None and events and held != events[-1].version:
        broken = f"@{alias} is {'v' + held if held else 'unset'} but the last entry is {events[-1].label()}"
    if broken is None and not events and held is not None:
        broken = f"@{alias} is v{held} but the history is empty (moved outside a2mae)"
    seqs = {e.seq for e in events}
    for seq, (who, _) in sorted(ledger.committed_slots(client, name).items()):
        if broken is None and seq not in seqs:
            broken = f"entry {seq}, committed by {who}, is missing from the history"
    if broken is not None:
        raise HistoryBrokenError(f"model {name}: alias history broken: {broken}")
    end = f"@{alias} = v{held}, the last entry" if held else f"@{alias} unset"
    return f"{name}: history verified: {len(events)} entries, chain of previous versions unbroken, {end}"
