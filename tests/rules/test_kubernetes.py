"""deploy/kubernetes/ parses, has the expected kinds, and stays identical to what it wraps.

There is no cluster here: every manifest is read with PyYAML (multi-document) and checked
for what `kubectl apply -k deploy/kubernetes` and kube-prometheus-stack need. The
PrometheusRule and the AlertmanagerConfig are generated (scripts/gen-kubernetes.py, `make
kubernetes`) from alert_rules/*.rules.yml and deploy/alertmanager.yml: regenerating them
gives the committed files, and their content is compared with the sources as structures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from receiver.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
# Reconciliation against the Alertmanager peers (DESIGN.md settings table); the receiver
# ignores the variable until that feature is there.
CONTRACT_ONLY = {"RECEIVER_ALERTMANAGER_URLS"}
EXPECTED_KINDS = {
    ("v1", "Namespace"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("batch/v1", "Job"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"),
}


def load_generator() -> ModuleType:
    script = ROOT / "scripts" / "gen-kubernetes.py"
    spec = importlib.util.spec_from_file_location("gen_kubernetes", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    out = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            doc["__file__"] = path.name
            out.append(doc)
    return out


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def test_every_manifest_has_a_known_kind_a_name_and_the_namespace(docs):
    assert {(d["apiVersion"], d["kind"]) for d in docs} == EXPECTED_KINDS
    for doc in docs:
        assert doc["metadata"]["name"], doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "blast-radius", doc["metadata"]


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def test_deployment_probes_tokens_database_and_resources(docs):
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    c = container(deployment)
    assert c["args"] == ["python", "-m", "receiver", "serve"]
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("http", 8080)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # A replica stays in the Service through a measured failover (answering 503 to
    # webhooks, serving breaker reads from memory): at least 10 s of failed readiness.
    ready = c["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] >= 10

    env = env_of(c)
    # Every variable is a setting the receiver knows (a typo would be silently ignored),
    # or one of DESIGN.md's settings table that lands with its own feature.
    fields = set(Settings.model_fields)
    for name in env:
        known = name.removeprefix("RECEIVER_").lower() in fields
        assert name == "DATABASE_URL" or known or name in CONTRACT_ONLY, name
    assert env["RECEIVER_HOST"]["value"] == "0.0.0.0"
    assert env["RECEIVER_PORT"]["value"] == str(port["containerPort"])
    for name, key in (("DATABASE_URL", "url"), ("RECEIVER_LISTEN_DATABASE_URL", "listen_url")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "receiver-database", "key": key}

    # Tokens are files from a Secret, never values in the manifest.
    assert "RECEIVER_WEBHOOK_TOKEN" not in env and "RECEIVER_API_TOKEN" not in env
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tokens"]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    secret = volumes["tokens"]["secret"]
    assert secret["secretName"] == "receiver-tokens"
    mounted = {f"{mount['mountPath']}/{item['path']}" for item in secret["items"]}
    assert env["RECEIVER_WEBHOOK_TOKEN_FILE"]["value"] in mounted
    assert env["RECEIVER_API_TOKEN_FILE"]["value"] in mounted
    # Readable by the image's user (uid 10001) through fsGroup, by nobody else.
    assert pod["spec"]["securityContext"]["fsGroup"] == 10001
    assert secret["defaultMode"] == 0o440

    resources = c["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_and_service_monitor_reach_the_pods(docs):
    deployment, service = one(docs, "Deployment"), one(docs, "Service")
    monitor = one(docs, "ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    service_labels = service["metadata"]["labels"].items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (port["name"], "/metrics")
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_migrate_job_runs_migrate_with_the_same_image(docs):
    job, deployment = one(docs, "Job"), one(docs, "Deployment")
    c = container(job)
    assert c["args"] == ["python", "-m", "receiver", "migrate"]
    assert c["image"] == container(deployment)["image"]
    env = env_of(c)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "receiver-database"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def source_rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted((ROOT / "alert_rules").glob("*.rules.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def test_prometheus_rule_carries_exactly_the_rules_of_alert_rules(docs):
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == source_rule_groups()
    assert rule["metadata"]["labels"]["release"]  # kube-prometheus-stack's ruleSelector


def am_route(route: dict[str, Any]) -> dict[str, Any]:
    """An AlertmanagerConfig route in alertmanager.yml's terms, matchers as (name, op, value)."""
    names = {
        "receiver": "receiver",
        "groupBy": "group_by",
        "groupWait": "group_wait",
        "groupInterval": "group_interval",
        "repeatInterval": "repeat_interval",
        "continue": "continue",
    }
    out: dict[str, Any] = {}
    for key, value in route.items():
        if key == "matchers":
            out["matchers"] = [(m["name"], m["matchType"], m["value"]) for m in value]
        elif key == "routes":
            out["routes"] = [am_route(r) for r in value]
        else:
            out[names[key]] = value
    return out


def source_route(route: dict[str, Any], matcher: Any) -> dict[str, Any]:
    out = {k: v for k, v in route.items() if k not in ("matchers", "routes", "match", "match_re")}
    matchers = [matcher(m) for m in route.get("matchers", [])]
    matchers += [(k, "=", str(v)) for k, v in route.get("match", {}).items()]
    matchers += [(k, "=~", str(v)) for k, v in route.get("match_re", {}).items()]
    if matchers:
        out["matchers"] = matchers
    if "routes" in route:
        out["routes"] = [source_route(r, matcher) for r in route["routes"]]
    return out


def test_alertmanager_config_routes_as_deploy_alertmanager_yml(docs):
    generator = load_generator()

    def matcher(text: str) -> tuple[str, str, str]:
        m = generator.matcher(text)
        return (m["name"], m["matchType"], m["value"])

    source = yaml.safe_load((ROOT / "deploy" / "alertmanager.yml").read_text())
    config = one(docs, "AlertmanagerConfig")
    route = am_route(config["spec"]["route"])
    # The one addition: a shared Alertmanager sends this receiver only the alerts of
    # alert_rules/ (every one of them).
    ours = route["matchers"].pop(0)
    alerts = sorted({r["alert"] for g in source_rule_groups() for r in g["rules"] if "alert" in r})
    assert ours == ("alertname", "=~", "|".join(alerts))
    if not route["matchers"]:
        del route["matchers"]
    assert route == source_route(source["route"], matcher)
    for key in ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval"):
        assert route[key] == source["route"][key], key

    # Same receivers and webhooks; the URL is the Service's, the token the Deployment's.
    service, deployment = one(docs, "Service"), one(docs, "Deployment")
    (port,) = service["spec"]["ports"]
    token_secret = next(
        v["secret"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "tokens"
    )
    webhook_key = next(i["key"] for i in token_secret["items"] if i["path"] == "webhook_token")
    receivers = {r["name"]: r for r in config["spec"]["receivers"]}
    assert set(receivers) == {r["name"] for r in source["receivers"]}
    for src in source["receivers"]:
        hooks = receivers[src["name"]]["webhookConfigs"]
        assert len(hooks) == len(src["webhook_configs"])
        for hook, src_hook in zip(hooks, src["webhook_configs"], strict=True):
            url = urlsplit(hook["url"])
            assert url.hostname == (
                f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
            )
            assert url.port == port["port"]
            assert url.path == urlsplit(src_hook["url"]).path == "/v1/alertmanager"
            assert hook["sendResolved"] == src_hook["send_resolved"]
            assert hook["maxAlerts"] == src_hook["max_alerts"]
            auth = hook["httpConfig"]["authorization"]
            assert auth["type"] == src_hook["http_config"]["authorization"]["type"] == "Bearer"
            assert auth["credentials"] == {
                "name": token_secret["secretName"],
                "key": webhook_key,
            }


def test_generated_manifests_are_current():
    generator = load_generator()
    for path, text in generator.render().items():
        assert path.read_text() == text, f"{path.name} is stale: run make kubernetes"


def test_generator_refuses_what_it_cannot_carry_over():
    generator = load_generator()
    with pytest.raises(SystemExit):
        generator.route({"receiver": "x", "mute_time_intervals": ["night"]})
    with pytest.raises(SystemExit):
        generator.matcher("not a matcher")
    assert generator.matcher('severity=~"crit.*"') == {
        "name": "severity",
        "value": "crit.*",
        "matchType": "=~",
    }
