# The two commands a new user needs (both install what they need into .venv first):
#   make demo   runs the pipeline end to end on the bundled real sample scenes
#   make test   runs the test suite (what CI runs)
.PHONY: demo test lint venv bench evidence clean clean-services

venv:
	@bash scripts/bootstrap.sh

demo: venv
	@.venv/bin/python -m flows.demo

# The evidence (docs/evidence.md): pre-training through the pipeline, then `a2mae benchmark` on every real
# labelled set; QUICK=1 does the same in at most 5 minutes (report in evidence-output-quick/);
# PARAMS=params/gpu.yaml runs it with the GPU overlay (benchmarks/gpu_evidence.sh).
evidence: venv
	@.venv/bin/python -m flows.evidence $(if $(QUICK),--quick) $(if $(PARAMS),--params $(PARAMS))

test: venv
	@bash scripts/test.sh

# Style, then types: mypy --strict over a2mae/ and flows/ ([tool.mypy] in pyproject.toml; cache in .mypy_cache/).
lint: venv
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/python -m mypy

bench: venv
	@for b in benchmarks/*.py; do .venv/bin/python $$b || exit 1; done

# Outputs of the demo and the tests; the services' state (.a2mae/) stays: see clean-services.
clean:
	rm -rf demo-output evidence-output evidence-output-quick .pytest_cache .mypy_cache

# Stops the services and deletes their state (.a2mae/: S3 data, MLflow and Prefect databases, the
# services' workspace) after asking; YES=1 skips the question.
clean-services:
	@bash scripts/clean-services.sh
