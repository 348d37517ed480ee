"""Experiment tracking with MLflow: run context, lineage tags, metrics, figures and the encoder model.

* :mod:`a2mae.tracking.mlflow` -- tracking URI, runs that resume, step-exact metric logging, lineage,
  logging and registering the encoder.
* :mod:`a2mae.tracking.figures` -- PNG panels of original / masked / reconstructed images (matplotlib Agg).
* :mod:`a2mae.tracking.encoder_pyfunc` -- the MLflow ``python_function`` loader of a logged encoder.
"""
