"""Stage 3, pre-training: optimiser, schedule, engine, per-worker loop and the Ray Train driver.

Module map:

* :mod:`a2mae.pretrain.optim` -- AdamW with decay / no-decay parameter groups, lr scaling.
* :mod:`a2mae.pretrain.schedule` -- per-step cosine schedule with linear warm-up.
* :mod:`a2mae.pretrain.sharding` -- which image sets each worker reads in an epoch (each exactly once).
* :mod:`a2mae.pretrain.engine` -- one optimiser step: accumulation, gradient sync, clipping, non-finite guard.
* :mod:`a2mae.pretrain.state` -- training checkpoints (model, optimiser, progress), no pickles.
* :mod:`a2mae.pretrain.context` -- where the loop runs: in-process or a Ray Train worker.
* :mod:`a2mae.pretrain.loop` -- ``train_loop_per_worker(config)``, the same loop in-process and under Ray.
* :mod:`a2mae.pretrain.ray_train` -- building the ``TorchTrainer`` from ``params.yaml``; connecting to Ray.
* :mod:`a2mae.pretrain.init` -- a run that starts from an earlier encoder's weights.
* :mod:`a2mae.pretrain.run` -- the driver: MLflow run, fit, encoder export and registration.

Importing this package is cheap: Ray and MLflow are imported by the modules that need them.
"""
