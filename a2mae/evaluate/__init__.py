"""Stage 5, evaluate: a challenger and ``@champion`` on the same frozen split, gated promotion.

:mod:`a2mae.evaluate.run` scores both and moves ``@champion`` only past the margin. See
``docs/registry.md``.
"""
