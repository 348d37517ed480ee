"""Model registry of the downstream stage.

Fine-tuned versions, challenger-vs-champion evaluation, gated promotion with evidence tags, manual
promotion and rollback with alias history. See ``docs/registry.md``.
"""
