"""``a2mae benchmark``: the field's evaluation protocol (frozen probes, arms, seeds, intervals).

Statistics foundation (numpy and scikit-learn only, no torch, no I/O):

* :mod:`a2mae.benchmark.metrics`: the task metrics on a protocol's test predictions, weighted so that a
  bootstrap replicate costs one pass over the samples, and the score of the label-frequency prior;
* :mod:`a2mae.benchmark.stats`: per-sample and spatial-block bootstrap intervals, paired differences
  between arms, the resolution a test set of this size allows, mean and std over seeds;
* :mod:`a2mae.benchmark.folds`: spatial blocks, groups of chips that share pixels, and folds that keep
  both whole.
"""
