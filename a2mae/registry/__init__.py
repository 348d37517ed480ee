"""Model registry: every MLflow model the pipeline logs, and the ``@champion`` alias.

* :mod:`a2mae.registry.encoder` -- log and register the pre-trained encoder, load it back.
* :mod:`a2mae.registry.encoder_pyfunc` -- the MLflow ``python_function`` loader of a logged encoder.
* :mod:`a2mae.registry.downstream` -- log, register and load fine-tuned models.
* :mod:`a2mae.registry.aliases` -- promote, rollback and the alias history.

See ``docs/registry.md``.
"""
