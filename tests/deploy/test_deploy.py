"""deploy/ and docker-compose.yml: valid against the Kubernetes schemas (offline), alert
rules checked and exercised by promtool, and everything in agreement with the service's
own configuration (the forwarder's `check-config` accepts each environment as written)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
PROM = ROOT / "deploy" / "prometheus"
KUBERNETES_VERSION = "1.30.0"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FORWARDER = TARGET / "debug" / "mparticle-forwarder"
CORE_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}


def load(path):
    return yaml.safe_load(path.read_text())


def manifests():
    kustomization = load(K8S / "kustomization.yaml")
    return {name: load(K8S / name) for name in kustomization["resources"]}


def by_kind(kind):
    return next(doc for doc in manifests().values() if doc["kind"] == kind)


def duration_seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", text)
    assert match, text
    number, unit = int(match[1]), match[2] or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def check_config(env, mounted_file):
    """Runs `mparticle-forwarder check-config` with `env`, the mapping file mounted at
    `mounted_file` read from the repository instead."""
    assert FORWARDER.exists(), f"build the service first (cargo build): {FORWARDER}"
    env = {k: str(v) for k, v in env.items()}
    assert env.get("FIELD_ASSIGNMENTS_FILE") == mounted_file
    env["FIELD_ASSIGNMENTS_FILE"] = str(ROOT / "config" / "field-assignments.toml")
    env["PATH"] = os.environ.get("PATH", "")
    return subprocess.run([FORWARDER, "check-config"], env=env, capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("name", sorted(manifests()))
def test_core_manifests_are_valid_against_the_kubernetes_schemas(name):
    doc = manifests()[name]
    if doc["kind"] not in CORE_KINDS:
        pytest.skip(f"{doc['kind']} is a custom resource; see the structural tests")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_deployment_is_locked_down_and_drains_within_its_grace_period():
    deployment = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    grace = duration_seconds(by_kind("ConfigMap")["data"]["SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > grace
    refs = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}
    assert refs == {by_kind("ConfigMap")["metadata"]["name"], by_kind("Secret")["metadata"]["name"]}
    mount = container["volumeMounts"][0]["mountPath"]
    assert by_kind("ConfigMap")["data"]["FIELD_ASSIGNMENTS_FILE"].startswith(mount + "/")
    static = {e["name"]: e for e in container["env"]}["KAFKA_GROUP_INSTANCE_ID"]
    assert static["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_the_memory_limit_holds_what_the_byte_bound_lets_in():
    container = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    bound = int(by_kind("ConfigMap")["data"]["MAX_IN_FLIGHT_BYTES"])
    # Records take up to four times the bound (source and retries, each with its batch);
    # the rest of the process about 50 MiB (README, Memory bound).
    assert 4 * bound + 50 * 2**20 <= int(limit[:-2]) * 2**20


def test_the_kubernetes_environment_is_accepted_by_the_service():
    env = dict(by_kind("ConfigMap")["data"])
    env.update(by_kind("Secret")["stringData"])
    # What the downward API gives a pod of the Deployment.
    env["KAFKA_GROUP_INSTANCE_ID"] = "mparticle-forwarder-5c7d9f8b6d-x2k8q"
    result = check_config(env, "/etc/mparticle-forwarder/field-assignments.toml")
    assert result.returncode == 0, result.stderr
    assert "replace-me" not in result.stdout, "secrets are masked"
    assert "static member:       mparticle-forwarder-5c7d9f8b6d-x2k8q" in result.stdout


def test_service_monitor_scaler_and_budget_point_at_the_right_things():
    service = by_kind("Service")
    monitor = by_kind("ServiceMonitor")
    labels = by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert service["spec"]["selector"].items() <= labels.items()
    budget = by_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    scaler = by_kind("ScaledObject")
    assert scaler["apiVersion"] == "keda.sh/v1alpha1"
    assert scaler["spec"]["scaleTargetRef"]["name"] == by_kind("Deployment")["metadata"]["name"]
    trigger = scaler["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == by_kind("ConfigMap")["data"]["KAFKA_GROUP_ID"]
    assert trigger["metadata"]["bootstrapServers"] == by_kind("ConfigMap")["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"]


def test_the_prometheus_rule_carries_exactly_the_checked_alert_rules():
    rule = by_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == load(PROM / "alerts.yml")["groups"]


def promtool():
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (scripts/test.sh does)"
    return tool


def test_promtool_checks_the_alert_rules():
    result = subprocess.run([promtool(), "check", "rules", "alerts.yml"], cwd=PROM, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_promtool_sees_each_alert_fire_on_its_series():
    result = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=PROM, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts.test.yml").read_text()))
    defined = {r["alert"] for g in load(PROM / "alerts.yml")["groups"] for r in g["rules"]}
    assert tested == defined, "every alert has a test"


def test_the_dashboard_is_grafana_json_over_the_services_metrics():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "mparticle-forwarder.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "mparticle_forwarder_" in target["expr"]


def compose():
    return load(ROOT / "docker-compose.yml")


def test_compose_has_kafka_topics_service_standin_and_prometheus():
    services = compose()["services"]
    assert {"kafka", "kafka-init", "mparticle-standin", "forwarder", "prometheus"} <= services.keys()
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
    forwarder = services["forwarder"]
    assert forwarder["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert duration_seconds(forwarder["stop_grace_period"]) > duration_seconds(forwarder["environment"]["SHUTDOWN_GRACE"])
    build = services["mparticle-standin"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).exists()
    assert build["target"] == "standin"
    assert services["forwarder"]["build"]["target"] == "service"


def test_the_service_image_does_not_ship_the_standin():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    service = [s for s in stages if s.split("\n", 1)[0].endswith(" AS service")]
    assert service, "a stage named service"
    assert "mparticle-standin" not in service[0]
    assert stages[-1] is service[0], "the service is what a plain docker build makes"


def test_compose_agrees_with_the_service_configuration():
    services = compose()["services"]
    env = services["forwarder"]["environment"]
    result = check_config(env, "/etc/mparticle-forwarder/field-assignments.toml")
    assert result.returncode == 0, result.stderr
    mounted = [v.split(":")[1] for v in services["forwarder"]["volumes"]]
    assert env["FIELD_ASSIGNMENTS_FILE"] in mounted
    specs = re.search(r"for spec in ([^;]+);", services["kafka-init"]["command"][0])[1].split()
    created = dict((name, int(count)) for name, count in (s.split(":") for s in specs))
    sources = env["KAFKA_TOPICS"].split(",")
    wanted = sources + [env["KAFKA_RETRY_TOPIC"], env["KAFKA_DLQ_TOPIC"]]
    assert sorted(created) == sorted(wanted), "kafka-init creates exactly the topics the service uses"
    most = max(created[t] for t in sources)
    assert created[env["KAFKA_RETRY_TOPIC"]] >= most * len(sources), "a retry partition per source partition"
    standin_port = services["mparticle-standin"]["command"][1].split(":")[1]
    assert env["MPARTICLE_API_URL"] == f"http://mparticle-standin:{standin_port}/s2s/v2/events"
    admin_port = env["ADMIN_ADDR"].split(":")[1]
    scrape = load(PROM / "prometheus.yml")["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == [f"forwarder:{admin_port}"]
    assert scrape["job_name"] == "mparticle-forwarder", "the job the Down alert watches"


def test_the_dockerfile_runs_non_root_from_a_small_image_with_the_mapping_in_place():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 3 and all("distroless" in stage for stage in stages[1:])
    assert re.search(r"^USER 65532", text, re.M)
    assert "COPY config/field-assignments.toml /etc/mparticle-forwarder/field-assignments.toml" in text
    assert "FIELD_ASSIGNMENTS_FILE=/etc/mparticle-forwarder/field-assignments.toml" in text
