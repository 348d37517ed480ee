"""Helpers shared by the flows: content keys for caching, the accelerator limit, artifacts, links.

Cache keys are built from *content* (file MD5s, listing fingerprints with S3 ETags, snapshot ids and
the parameter section a task depends on), never from path strings alone: a rewritten object under the
same name misses the cache, and a change elsewhere in ``params.yaml`` does not invalidate it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from a2mae.config import Params, validate_params


# ------------------------------------------------------------------------------------------- content
def file_md5(path: str | os.PathLike[str]) -> str:
    """MD5 of a local file's bytes, or ``"absent"``."""
    digest = hashlib.md5()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return "absent"
    return digest.hexdigest()


def snapshot_id(path: str | os.PathLike[str], verify: bool = False) -> str | None:
    """The content id in a local snapshot's ``snapshot.json`` (None when there is no complete snapshot).

    With ``verify``, every file is also checked against the digests of its ``snapshot.json``
    (:func:`a2mae.stssd.snapshot.verify_snapshot`); a damaged snapshot gives None.
    """
    if verify:
        from a2mae.errors import A2maeError
        from a2mae.stssd.snapshot import verify_snapshot

        try:
            return str(verify_snapshot(path)["snapshot_id"])
        except A2maeError:
            return None
    try:
        doc = json.loads((Path(path) / "snapshot.json").read_text())
    except (OSError, ValueError):
        return None
    return str(doc.get("snapshot_id")) if doc.get("snapshot_id") else None


#: How long a cached task result may stand in for a rerun (the record expires; the task runs again).
CACHE_EXPIRATION = timedelta(days=7)
# Cached tasks store their results as JSON (never pickles) with this expiration, in the result storage:
# ``$PREFECT_HOME/storage``, or under ``infra.home`` for the services' deployments
# (``PREFECT_RESULTS_LOCAL_STORAGE_PATH``).


def cached_call(task_: Any, valid: Callable[[Any], bool], *args: Any, refresh: bool = False) -> Any:
    """Run a cached task; a result that ``valid`` rejects is computed again (cache refreshed).

    A task's cache key names its *inputs*; its outputs (a catalog, a snapshot folder) live outside the
    cache and may have been deleted or replaced since. ``valid`` (called after the task) checks the
    result against the outputs as they are now, so a cached answer never stands in for an output that
    is not there. ``refresh``: skip the cache from the start (the output is known to be gone).
    """
    result = task_.with_options(refresh_cache=True)(*args) if refresh else task_(*args)
    if not refresh and not valid(result):
        result = task_.with_options(refresh_cache=True)(*args)
    return result


def content_key(*parts: Any) -> str:
    """A stable hash of JSON-able parts (the cache key of a task)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def params_from(doc: Mapping[str, Any]) -> Params:
    """Tasks get parameters as plain dicts (hashable, serialisable); this validates them back."""
    return validate_params(doc, source="flow parameters")


# --------------------------------------------------------------------------------------- concurrency
def ensure_concurrency_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit ``name`` with ``slots`` when it does not exist (idempotent).

    Prefect 3 refuses to acquire slots of a missing limit, so the serve process and every training flow
    call this before taking ``concurrency(name)``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # created meanwhile by another run
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


# ----------------------------------------------------------------------------------------- artifacts
def artifact_key(*parts: str) -> str:
    """An artifact key: lowercase letters, digits and dashes only (Prefect's rule)."""
    raw = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-")[:100]


def table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    """A table artifact (skipped when there are no rows)."""
    if rows:
        create_table_artifact([dict(r) for r in rows], key=artifact_key(key), description=description)


def markdown(key: str, text: str, description: str) -> None:
    """A markdown artifact."""
    create_markdown_artifact(text, key=artifact_key(key), description=description)


#: Base URL of an MLflow UI over a local (SQLite) store, for links; the demo sets it to the port it
#: then tells the user to start ``mlflow ui`` on.
MLFLOW_UI_ENV = "A2MAE_MLFLOW_UI_URL"


def mlflow_ui_url(tracking_uri: str) -> str | None:
    """Base URL of the MLflow UI: the ``http(s)`` tracking server, else ``$A2MAE_MLFLOW_UI_URL``, or None."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get(MLFLOW_UI_ENV, "").rstrip("/") or None


def mlflow_run_path(experiment_id: str, run_id: str) -> str:
    """The UI path of a run (relative to the UI's base URL)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_version_path(model: str, version: str | int) -> str:
    """The UI path of a registered model version."""
    return f"#/models/{model}/versions/{version}"


def md_link(tracking_uri: str, path: str, text: str) -> str:
    """A markdown link to an MLflow UI page, or the text with the page's path when there is no UI URL."""
    base = mlflow_ui_url(tracking_uri)
    return f"[{text}]({base}/{path})" if base else f"{text} (`mlflow ui`: `{path}`)"


def link_mlflow(key: str, tracking_uri: str, path: str, text: str) -> str:
    """A link artifact to an MLflow UI page (``path`` like ``#/experiments/1/runs/abc``).

    Returns:
        The URL, or a ``mlflow ui --backend-store-uri ...`` hint for a local store without a UI URL.
    """
    base = mlflow_ui_url(tracking_uri)
    if base is None:
        from a2mae.services.base import free_port

        port = free_port(5000)  # 5000 may be the services' MLflow: a taken port makes `mlflow ui` exit
        hint = (
            f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port {port}  "
            f"then open http://127.0.0.1:{port}/{path}"
        )
        markdown(key, f"**{text}**: run `{hint}`", description=text)
        return hint
    url = f"{base}/{path}"
    create_link_artifact(url, link_text=text, key=artifact_key(key), description=text)
    return url


# ----------------------------------------------------------------------------------- flow-run links
def flow_run_link() -> tuple[dict[str, str], str]:
    """Tags and a markdown line naming the current Prefect flow run (with its UI URL when known)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    run_id, name, flow = flow_run.id, flow_run.name, flow_run.flow_name
    if not run_id:
        return {}, ""
    tags = {
        "a2mae.prefect.flow_run_id": str(run_id),
        "a2mae.prefect.flow_run_name": str(name),
        "a2mae.prefect.flow_name": str(flow),
    }
    ui = (PREFECT_UI_URL.value() or "").rstrip("/")
    if ui:
        tags["a2mae.prefect.flow_run_url"] = f"{ui}/runs/flow-run/{run_id}"
        return tags, f"Prefect flow run [{flow} / {name}]({tags['a2mae.prefect.flow_run_url']})"
    return tags, f"Prefect flow run {flow} / `{name}` (id `{run_id}`)"


@contextlib.contextmanager
def mlflow_links() -> Iterator[None]:
    """While inside, MLflow runs the stages create link back to the current flow run (tags, description)."""
    from a2mae.tracking.context import run_context

    tags, note = flow_run_link()
    with run_context(tags, note):
        yield


def log(msg: str) -> None:
    """Log to the flow run (shows in the Prefect UI)."""
    get_run_logger().info(msg)


def stage(name: str, text: str) -> None:
    """A stage's outcome: logged to the flow run, and one line of the command's output (the demo)."""
    from a2mae import console

    log(f"{name}: {text}")
    console.line(f"  {name:<9} {text}")


#: Emitted whenever a fine-tuned model becomes champion (retrain's gate or a manual promotion).
PROMOTED_EVENT = "a2mae.model.promoted"


def emit_promoted(model: str, version: str | int, **payload: Any) -> None:
    """Emit :data:`PROMOTED_EVENT` for ``model`` version ``version`` (the predict deployment follows it)."""
    from prefect.events import emit_event

    emit_event(
        event=PROMOTED_EVENT,
        resource={"prefect.resource.id": f"mlflow.model.{model}.{version}"},
        payload={
            "model": model,
            "version": str(version),
            "model_uri": f"models:/{model}/{version}",
            **payload,
        },
    )
