"""Experiment tracking with MLflow, shared by the training stages.

* :mod:`a2mae.tracking.client` -- which tracking store (``$MLFLOW_TRACKING_URI`` or
  ``registry.tracking_uri``), pointing MLflow at it, failing fast when it is down.
* :mod:`a2mae.tracking.lineage` -- tags tying a run to its code, parameters and data.
* :mod:`a2mae.tracking.runs` -- one MLflow run per training run name, step-exact metric logging.
* :mod:`a2mae.tracking.context` -- run descriptions, and the Prefect flow run a run belongs to.
* :mod:`a2mae.tracking.figures` -- PNG panels of original / masked / reconstructed images (matplotlib Agg).

Logging and loading *models* is the registry's job (:mod:`a2mae.registry`).
"""
