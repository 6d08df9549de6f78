"""deploy/k8s: every manifest valid by the Kubernetes schemas, and the manifests in agreement.

kubernetes-validate ships the Kubernetes JSON schemas for many releases inside its wheel, so
this needs no cluster and no network. Strict mode rejects unknown fields.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest release still common in managed clusters, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# Outside kustomization.yaml on purpose (README.md says why), but validated all the same.
NOT_APPLIED = {"secret.example.yaml", "prometheus-adapter-rules.yaml"}

Manifest = dict[str, Any]


def documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def all_manifests() -> list[Manifest]:
    return [doc for path in manifest_files() for doc in documents(path)]


def find(kind: str, name: str) -> Manifest:
    (found,) = [m for m in all_manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def container(workload: Manifest) -> dict[str, Any]:
    (first,) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = first
    return result


def label(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


# --- Schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", all_manifests(), ids=label)
def test_manifest_validates_strictly_against_the_kubernetes_schema(
    manifest: Manifest, version: str
) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize(
    "breakage", ["misspelt field", "quantity of the wrong type", "probe without a handler port"]
)
def test_the_validator_rejects_a_broken_manifest(breakage: str) -> None:
    broken = copy.deepcopy(find("Deployment", "qwen-image-edit"))
    gateway = container(broken)
    if breakage == "misspelt field":
        broken["spec"]["replcas"] = 2
    elif breakage == "quantity of the wrong type":
        gateway["resources"]["limits"]["memory"] = ["1Gi"]
    else:
        del gateway["readinessProbe"]["httpGet"]["port"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_two_left_out_on_purpose() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in manifest_files()}
    assert listed <= present, f"listed but missing: {listed - present}"
    assert present - listed == NOT_APPLIED
    assert kustomization["namespace"] == "qwen-image-edit"


# --- Triton ----------------------------------------------------------------------------------


def test_each_triton_pod_gets_exactly_one_gpu() -> None:
    resources = container(find("StatefulSet", "triton"))["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1


def test_triton_probes_ask_triton_itself_on_8003() -> None:
    triton = container(find("StatefulSet", "triton"))
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"grpc": 8001, "metrics": 8002, "http": 8003}
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # Liveness waits for a slow first start: the download may take most of an hour.
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800


def test_triton_runs_as_the_image_user_with_the_shared_weight_cache() -> None:
    triton = find("StatefulSet", "triton")
    pod = triton["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001
    assert "USER 10001:10001" in (ROOT / "Dockerfile.triton").read_text()
    mounts = {m["name"]: m["mountPath"] for m in container(triton)["volumeMounts"]}
    assert mounts["hf-cache"] == "/models/hf-cache"
    claims = {v["name"]: v.get("persistentVolumeClaim", {}) for v in pod["volumes"]}
    assert (
        claims["hf-cache"]["claimName"]
        == find("PersistentVolumeClaim", "hf-cache")["metadata"]["name"]
    )


def test_triton_is_addressable_pod_by_pod_through_a_headless_service() -> None:
    service = find("Service", "triton")
    assert service["spec"]["clusterIP"] == "None"
    assert find("StatefulSet", "triton")["spec"]["serviceName"] == "triton"


# --- Gateway ---------------------------------------------------------------------------------


def test_gateway_lists_every_triton_pod_the_autoscaler_may_start() -> None:
    urls = find("ConfigMap", "gateway-config")["data"]["TRITON_URLS"].split(",")
    max_replicas = find("HorizontalPodAutoscaler", "triton")["spec"]["maxReplicas"]
    assert urls == [f"triton-{i}.triton:8001" for i in range(max_replicas)]


def test_gateway_is_stateless_and_uses_redis() -> None:
    config = find("ConfigMap", "gateway-config")["data"]
    assert config["REDIS_URL"] == "redis://redis:6379/0"
    assert find("Service", "redis")["spec"]["ports"][0]["port"] == 6379
    assert find("Deployment", "qwen-image-edit")["spec"]["replicas"] >= 2


def test_gateway_reads_its_keys_from_the_secret_the_example_describes() -> None:
    env = {e["name"]: e for e in container(find("Deployment", "qwen-image-edit"))["env"]}
    secret = find("Secret", "qwen-image-edit-secrets")
    for key in ("GATEWAY_API_KEYS", "WEBHOOK_SECRET"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    assert "optional" not in env["GATEWAY_API_KEYS"]["valueFrom"]["secretKeyRef"]


def test_gateway_serves_8000_for_in_cluster_serverpod() -> None:
    service = find("Service", "qwen-image-edit")
    assert service["spec"]["ports"][0]["port"] == 8000
    probes = container(find("Deployment", "qwen-image-edit"))
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health/live"


# --- Redis -----------------------------------------------------------------------------------


def test_redis_keeps_an_append_only_file_on_a_persistent_volume() -> None:
    redis = find("StatefulSet", "redis")
    assert "--appendonly yes" in " ".join(container(redis)["args"])
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(redis)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"


# --- Autoscaling -----------------------------------------------------------------------------


def test_hpa_scales_the_triton_statefulset_on_queue_depth() -> None:
    hpa = find("HorizontalPodAutoscaler", "triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "triton",
    }
    external = [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"] if "external" in m]
    assert external == ["qie_queue_depth"]


def test_adapter_rules_serve_every_metric_the_hpa_asks_for() -> None:
    config = yaml.safe_load(find("ConfigMap", "adapter-config")["data"]["config.yaml"])
    served = {
        "Pods": {rule["name"]["as"] for rule in config["rules"]},
        "External": {rule["name"]["as"] for rule in config["externalRules"]},
    }
    for metric in find("HorizontalPodAutoscaler", "triton")["spec"]["metrics"]:
        name = metric[metric["type"].lower()]["metric"]["name"]
        assert name in served[metric["type"]], f"{metric['type']} metric {name} is not served"
    for rule in config["rules"] + config["externalRules"]:
        assert "<<.LabelMatchers>>" in rule["metricsQuery"]
        assert re.search(r"\bnamespace!=\"\"", rule["seriesQuery"])


def test_readme_scrape_config_gives_the_adapter_and_the_alerts_their_labels() -> None:
    # Debian's promtool is built without Kubernetes service discovery, so this reads the
    # configuration rather than running `promtool check config` on it.
    readme = (K8S / "README.md").read_text()
    block = re.search(r"```yaml\n( *scrape_configs:.*?)```", readme, re.DOTALL)
    assert block, "README.md lost its scrape configuration"
    jobs = {job["job_name"]: job for job in yaml.safe_load(block[1])["scrape_configs"]}
    compose_jobs = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    assert set(jobs) == {job["job_name"] for job in compose_jobs["scrape_configs"]}
    for name, job in jobs.items():
        relabels = job["relabel_configs"]
        targets = {r.get("target_label") for r in relabels}
        assert {"namespace", "pod"} <= targets, f"{name} lacks the labels the adapter needs"
        kept = {r["regex"] for r in relabels if r.get("action") == "keep"}
        workload = find("StatefulSet" if name == "triton" else "Deployment", name)
        assert workload["metadata"]["labels"]["app.kubernetes.io/name"] in kept
        port_names = {p["name"] for p in container(workload)["ports"]}
        assert kept & port_names, f"{name} keeps no port that the pod has"
