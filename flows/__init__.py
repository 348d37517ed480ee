"""Prefect flows of the a2mae pipeline: thin, typed wrappers over the ``a2mae`` library.

``retrain`` is the parent flow (new imagery -> ingest -> tile -> DVC snapshot -> pre-train -> fine-tune
-> evaluate -> promote); ``serve`` registers the deployments. See docs/orchestration.md.
"""
