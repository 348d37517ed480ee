"""A lock per registered model, held by the tracking store: the numbered slots of its alias history.

MLflow's API has no compare-and-set: tags and aliases are plain upserts, so "read the history, write it
back if unchanged" cannot be made atomic through it. What the tracking store does make atomic, on
SQLite as behind the MLflow server, is the creation of an experiment with a unique name (a second
``create_experiment`` of the same name fails with ``RESOURCE_ALREADY_EXISTS``, whatever machine asks).
So the n-th move of model ``M``'s alias history is claimed by creating the experiment
``a2mae.registry-lock/M/<n>`` (a *slot*): exactly one writer gets slot n, on any machine that shares the
tracking server, and it writes entry n of the history. Slot n is claimed only once entry n-1 is
written, so writers take turns in the history's order.

A slot is a lease: it carries its holder and is created with the store's clock
(``creation_time``). A holder that died leaves its slot pending; after ``lease_s`` the next writer marks
it ``abandoned`` and claims the slot after it (a gap in the numbers, never two writers of one number).
A holder checks that its lease still stands right before it writes (:meth:`Slot.check`). A finished
slot is marked ``committed`` (with the entry it wrote) or ``released`` (nothing written) and deleted,
so it leaves the experiments list of the UI; MLflow keeps a deleted experiment's name, so the slot stays
taken, and ``a2mae history --verify`` reads the committed slots back to find entries missing from the
history.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from a2mae.registry.errors import RegistryBusyError as RegistryBusyError  # re-exported

PREFIX = "a2mae.registry-lock"
STATE_TAG = "a2mae.lock.state"
HOLDER_TAG = "a2mae.lock.holder"
LEASE_TAG = "a2mae.lock.lease_s"
EVENT_TAG = "a2mae.lock.event"
#: How long a slot's holder may take before others consider it dead (seconds).
LEASE_S = 60.0
#: How long a writer waits for the slots of others before it gives up (seconds).
WAIT_S = 120.0


def holder() -> str:
    """Who writes: ``user@host pid N``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def slot_name(model: str, seq: int) -> str:
    """The experiment name of slot ``seq`` of ``model``."""
    return f"{PREFIX}/{model}/{seq:06d}"


@dataclass
class Slot:
    """A claimed slot: the right to write entry ``seq`` of ``model``'s history.

    Attributes:
        client: The MLflow client.
        model: Registered model.
        seq: Number of the history entry this slot writes.
        experiment_id: The slot's experiment.
        created_ms: When the store created it (its clock, epoch milliseconds).
        lease_s: The lease.
    """

    client: Any
    model: str
    seq: int
    experiment_id: str
    created_ms: int
    lease_s: float

    def check(self) -> None:
        """Refuse to write when the lease ran out or another writer declared this slot abandoned.

        Raises:
            RegistryBusyError: The lock was lost (nothing of this move was written).
        """
        exp = self.client.get_experiment(self.experiment_id)
        state = exp.tags.get(STATE_TAG)
        left = self.created_ms / 1000 + self.lease_s * 0.75 - time.time()
        if exp.lifecycle_stage != "active" or state != "pending" or left <= 0:
            raise RegistryBusyError(
                f"model {self.model}: lost the lock of history entry {self.seq} (held over "
                f"{self.lease_s * 0.75:.0f} s or taken over by another writer); nothing was moved, try again"
            )

    def finish(self, state: str, event_json: str | None = None) -> None:
        """Mark the slot ``committed`` (with the entry written) or ``released`` and hide it."""
        _finish(self.client, self.experiment_id, state, event_json)


def _finish(client: Any, experiment_id: str, state: str, event_json: str | None = None) -> None:
    from mlflow.exceptions import MlflowException

    try:
        if event_json is not None:
            client.set_experiment_tag(experiment_id, EVENT_TAG, event_json)
        client.set_experiment_tag(experiment_id, STATE_TAG, state)
        client.delete_experiment(experiment_id)
    except MlflowException:
        pass  # another writer finished it first (an abandoned slot), or it is gone


def _claim(client: Any, model: str, seq: int, lease_s: float, who: str) -> Slot | None:
    """Create slot ``seq``; None when it exists already."""
    from mlflow.exceptions import MlflowException

    tags = {
        STATE_TAG: "pending",
        HOLDER_TAG: who,
        LEASE_TAG: repr(lease_s),
        EVENT_TAG: "",
        "mlflow.note.content": f"Lock of the alias history of {model}, entry {seq}, held by {who} "
        "(a2mae; see docs/registry.md). Deleted when its move is written.",
    }
    try:
        exp_id = client.create_experiment(slot_name(model, seq), tags=tags)
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" in str(getattr(err, "error_code", "")) or "already exists" in str(err):
            return None
        raise
    created = client.get_experiment(exp_id).creation_time
    return Slot(client, model, seq, str(exp_id), int(created), lease_s)


def _inspect(client: Any, model: str, seq: int) -> str:
    """What holds slot ``seq`` now: ``free``, ``skip`` (finished: try the next number) or ``busy``.

    A pending slot older than its lease is marked ``abandoned`` here and skipped.
    """
    exp = client.get_experiment_by_name(slot_name(model, seq))
    if exp is None:
        return "free"
    if exp.tags.get(STATE_TAG, "") != "pending":
        return "skip"  # committed (the history is past it), released or abandoned
    lease = float(exp.tags.get(LEASE_TAG) or LEASE_S)
    if exp.lifecycle_stage == "active" and (exp.creation_time or 0) / 1000 + lease > time.time():
        return "busy"
    _finish(client, str(exp.experiment_id), "abandoned")
    return "skip"


def acquire(
    client: Any,
    model: str,
    last_seq: Callable[[], int],
    *,
    wait_s: float = WAIT_S,
    lease_s: float = LEASE_S,
) -> Slot:
    """Claim the slot of the next history entry of ``model``, waiting (with backoff) while others hold it.

    Args:
        client: MLflow client.
        model: Registered model.
        last_seq: Reads the number of the history's last entry (0: empty) from the store.
        wait_s: Give up after this long.
        lease_s: Lease of the claimed slot.

    Raises:
        RegistryBusyError: Other writers held the history for ``wait_s`` seconds.
    """
    who = holder()
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        seq = last_seq() + 1
        got = "skip"
        while got != "busy" and time.monotonic() <= deadline:
            slot = _claim(client, model, seq, lease_s, who)
            if slot is not None:
                if last_seq() < seq:
                    return slot
                slot.finish("released")  # an old number whose slot was purged: the history is past it
                seq = last_seq() + 1
                continue
            got = _inspect(client, model, seq)
            seq += got == "skip"
        if time.monotonic() > deadline:
            raise RegistryBusyError(
                f"model {model}: history entry {seq} has been locked by another writer for over "
                f"{wait_s:.0f} s (experiment {slot_name(model, seq)}); try again later"
            )
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 1.0)


def committed_slots(client: Any, model: str) -> dict[int, tuple[str, str]]:
    """Committed slots of ``model``: entry number -> (holder, the entry they wrote as JSON)."""
    from mlflow.entities import ViewType

    prefix = f"{PREFIX}/{model}/"
    found: dict[int, tuple[str, str]] = {}
    token = None
    while True:
        page = client.search_experiments(
            view_type=ViewType.ALL, filter_string=f"name LIKE '{prefix}%'", page_token=token
        )
        for exp in page:
            tail = exp.name[len(prefix) :]
            if exp.name.startswith(prefix) and tail.isdigit() and exp.tags.get(STATE_TAG) == "committed":
                found[int(tail)] = (exp.tags.get(HOLDER_TAG, "?"), exp.tags.get(EVENT_TAG, ""))
        token = page.token
        if not token:
            return found
