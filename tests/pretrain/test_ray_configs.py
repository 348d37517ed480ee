"""The Ray cluster configurations in infra/ray/ are valid and consistent with the pinned stack."""

from __future__ import annotations

from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra" / "ray"


def test_cluster_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on a schema error
    assert config["provider"]["type"] == "local"
    setup = " ".join(config["setup_commands"])
    assert "-c constraints.txt -r requirements.lock" in setup  # torch stays pinned on every node
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])


def test_kuberay_manifest_matches_the_pinned_ray_and_shares_env():
    import ray

    doc = yaml.safe_load((INFRA / "raycluster.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    assert doc["spec"]["rayVersion"] == ray.__version__
    head = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    workers = doc["spec"]["workerGroupSpecs"]
    assert workers and all(w["minReplicas"] <= w["replicas"] <= w["maxReplicas"] for w in workers)
    names = {e["name"] for e in head["env"]}
    assert {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
    for w in workers:
        assert w["template"]["spec"]["containers"][0]["env"] == head["env"]
