"""docker-compose.yml and the deploy configs agree with each other and with the repository.

There is no docker here: the file is read with PyYAML (merge keys included) and checked
for what `docker compose up` would need: services, images, ports, mounts of files that
exist, health checks and start order, and the host:port pairs that Prometheus and
Alertmanager use to reach the other services.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus.yml"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager.yml"
OWNER_URL = "postgresql+psycopg://receiver_owner:receiver-owner-demo@postgres:5432/receiver"
APP_URL = "postgresql+psycopg://receiver_app:receiver-app-demo@postgres:5432/receiver"
INITDB = ROOT / "deploy" / "initdb" / "10-roles.sh"
# Host files that are not in git: created from a checked-in `<name>.example`.
LOCAL_ONLY = {
    "deploy/webhook_token",
    "deploy/api_token",
    "deploy/grafana_admin_password",
    "deploy/grafana_db_password",
}
GRAFANA = ROOT / "deploy" / "grafana"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_YML.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def alertmanager() -> dict[str, Any]:
    return yaml.safe_load(ALERTMANAGER_YML.read_text())  # type: ignore[no-any-return]


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def container_ports(service: dict[str, Any]) -> dict[int, int]:
    """{container port: host port} from short-syntax `ports` ([IP:]HOST:CONTAINER)."""
    return {container: host for container, (_, host) in published(service).items()}


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """{container port: (host address, host port)}; no address means every interface."""
    out: dict[int, tuple[str, int]] = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) in (2, 3), f"use [IP:]HOST:CONTAINER, got {spec!r}"
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        out[int(parts[-1])] = (address, int(parts[-2]))
    return out


def host_ips(service: dict[str, Any]) -> set[str]:
    """The host addresses the ports are bound to ("" for every interface)."""
    return {str(p).split(":")[0] if str(p).count(":") == 2 else "" for p in service["ports"]}


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: host path} of the bind mounts (host paths start with ./)."""
    out: dict[str, str] = {}
    for spec in service.get("volumes", []):
        source, target, *_ = str(spec).split(":")
        if source.startswith("./"):
            out[target] = source[2:]
    return out


def flag(service: dict[str, Any], name: str) -> str:
    for arg in service["command"]:
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    raise AssertionError(f"--{name} missing from {service['command']}")


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def assert_host_file_exists(relative: str) -> None:
    path = ROOT / relative
    if relative in LOCAL_ONLY:
        example = path.with_name(path.name + ".example")
        assert example.is_file(), f"{relative} is created from {example.name}, which is missing"
        assert "replace-me" in example.read_text(), f"{example.name} must hold a placeholder"
    else:
        assert path.exists(), f"{relative} is mounted but does not exist"


# --- services --------------------------------------------------------------------------


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "postgres",
        "migrate",
        "receiver",
        "prometheus",
        "alertmanager",
        "traffic",
        "grafana",
    }
    assert services["postgres"]["image"] == "postgres:15"
    assert services["grafana"]["image"].startswith("grafana/grafana:11.")
    assert services["prometheus"]["image"] == "prom/prometheus:v2.42.0"
    assert services["alertmanager"]["image"] == "prom/alertmanager:v0.25.0"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("migrate", ["python", "-m", "receiver", "migrate"]),
        ("receiver", ["python", "-m", "receiver", "serve"]),
        ("traffic", ["python", "-m", "demo.traffic"]),
    ],
)
def test_project_services_build_the_repository_image(
    services: dict[str, dict[str, Any]], name: str, command: list[str]
) -> None:
    service = services[name]
    assert service["build"]["context"] == "."
    assert service["build"]["dockerfile"] == "Dockerfile"
    assert service["command"] == command


def test_dockerfile_is_at_the_build_context() -> None:
    assert (ROOT / "Dockerfile").is_file(), "build: . needs the Dockerfile at the repository root"


def test_ports(services: dict[str, dict[str, Any]]) -> None:
    assert container_ports(services["receiver"]) == {8080: 8080}
    assert container_ports(services["prometheus"]) == {9090: 9090}
    assert container_ports(services["alertmanager"]) == {9093: 9093}
    assert container_ports(services["traffic"]) == {9100: 9100}
    assert "ports" not in services["postgres"], "use docker compose exec postgres psql"


@pytest.mark.parametrize(
    ("name", "port"), [("prometheus", 9090), ("alertmanager", 9093), ("traffic", 9100)]
)
def test_unauthenticated_services_listen_on_loopback_only(
    services: dict[str, dict[str, Any]], name: str, port: int
) -> None:
    """No authentication (and Prometheus with --web.enable-lifecycle): 127.0.0.1 only."""
    assert published(services[name]) == {port: ("127.0.0.1", port)}


def test_every_mounted_host_path_exists(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for service in services.values():
        for host_path in bind_mounts(service).values():
            assert_host_file_exists(host_path)
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./")
        assert_host_file_exists(secret["file"][2:])


def test_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for service in services.values():
        for spec in service.get("volumes", []):
            source = str(spec).split(":")[0]
            if not source.startswith(("./", "/")):
                assert source in compose["volumes"], source


# --- start order and health --------------------------------------------------------------


def test_postgres_health_check_uses_pg_isready(services: dict[str, dict[str, Any]]) -> None:
    check = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(check)


def test_receiver_health_check_asks_readyz(services: dict[str, dict[str, Any]]) -> None:
    check = " ".join(services["receiver"]["healthcheck"]["test"])
    assert "/readyz" in check and ":8080" in check


@pytest.mark.parametrize(
    ("name", "dependency", "condition"),
    [
        ("migrate", "postgres", "service_healthy"),
        ("receiver", "migrate", "service_completed_successfully"),
        ("traffic", "receiver", "service_healthy"),
        ("prometheus", "alertmanager", "service_started"),
        ("grafana", "prometheus", "service_started"),
        ("grafana", "postgres", "service_healthy"),
    ],
)
def test_start_order(
    services: dict[str, dict[str, Any]], name: str, dependency: str, condition: str
) -> None:
    assert services[name]["depends_on"][dependency]["condition"] == condition


def test_health_conditions_point_at_services_with_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    for service in services.values():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency


def test_migrate_is_one_shot(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"].get("restart", "no") == "no"
    assert "ports" not in services["migrate"]


# --- settings and secrets ---------------------------------------------------------------


def test_receiver_settings(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    receiver = services["receiver"]
    settings = env(receiver)
    assert settings["DATABASE_URL"] == APP_URL
    assert "RECEIVER_DB_APP_ROLE" not in settings
    assert settings["RECEIVER_WEBHOOK_TOKEN_FILE"] == "/run/secrets/webhook_token"
    assert settings["RECEIVER_API_TOKEN_FILE"] == "/run/secrets/api_token"
    assert "RECEIVER_ALLOW_UNAUTHENTICATED" not in settings
    assert set(receiver["secrets"]) == {"webhook_token", "api_token"}
    assert compose["secrets"]["webhook_token"]["file"] == "./deploy/webhook_token"
    assert compose["secrets"]["api_token"]["file"] == "./deploy/api_token"
    assert int(settings.get("RECEIVER_PORT", "8080")) in container_ports(receiver)


def test_two_roles_migrate_as_owner_and_serve_as_app(services: dict[str, dict[str, Any]]) -> None:
    """DESIGN.md "Least privilege": migrate runs as the owner and grants the app role,
    serve runs as the app role; neither is the image's superuser."""
    postgres = env(services["postgres"])
    migrate = env(services["migrate"])
    assert migrate["DATABASE_URL"] == OWNER_URL
    assert env(services["receiver"])["DATABASE_URL"] == APP_URL
    owner, app = urlsplit(OWNER_URL), urlsplit(APP_URL)
    assert migrate["RECEIVER_DB_APP_ROLE"] == app.username
    assert len({owner.username, app.username, postgres["POSTGRES_USER"]}) == 3
    assert owner.password == postgres["RECEIVER_OWNER_PASSWORD"]
    assert app.password == postgres["RECEIVER_APP_PASSWORD"]
    for url in (owner, app):
        assert url.hostname == "postgres"
        assert url.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert bind_mounts(services["postgres"])["/docker-entrypoint-initdb.d"] == "deploy/initdb"
    script = INITDB.read_text()
    for role in (owner.username, app.username):
        assert f"CREATE ROLE {role} LOGIN NOSUPERUSER" in script
    assert f"ALTER DATABASE {postgres['POSTGRES_DB']} OWNER TO {owner.username}" in script
    assert INITDB.stat().st_mode & 0o111, "the image runs *.sh that are executable"


def test_traffic_reaches_the_receiver_with_the_api_token(
    services: dict[str, dict[str, Any]],
) -> None:
    traffic = services["traffic"]
    settings = env(traffic)
    url = urlsplit(settings["TRAFFIC_RECEIVER_URL"])
    assert url.hostname == "receiver"
    assert url.port in container_ports(services["receiver"])
    assert settings["TRAFFIC_API_TOKEN_FILE"] == "/run/secrets/api_token"
    assert traffic["secrets"] == ["api_token"]
    assert int(settings["TRAFFIC_PORT"]) in container_ports(traffic)


def test_traffic_settings_are_ones_the_generator_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    from demo.traffic import TrafficSettings, parse_tenants

    settings = env(services["traffic"])
    known = {f"TRAFFIC_{name.upper()}" for name in TrafficSettings.model_fields}
    assert set(settings) <= known, set(settings) - known
    parse_tenants(settings.get("TRAFFIC_TENANTS", "6"))
    # It must listen on every interface, or Prometheus cannot scrape it.
    assert settings.get("TRAFFIC_HOST", "0.0.0.0") == "0.0.0.0"


def test_no_real_token_is_committed() -> None:
    ignored = (ROOT / "deploy" / ".gitignore").read_text().split()
    for relative in LOCAL_ONLY:
        assert "/" + Path(relative).name in ignored, relative


# --- compose <-> prometheus.yml <-> alertmanager.yml --------------------------------------


def test_prometheus_mounts_match_its_config(
    services: dict[str, dict[str, Any]], prometheus: dict[str, Any]
) -> None:
    service = services["prometheus"]
    mounts = bind_mounts(service)
    config_path = flag(service, "config.file")
    assert mounts[config_path] == "deploy/prometheus.yml"
    # rule_files resolve against the config file's folder, in the container too.
    config_dir = PurePosixPath(config_path).parent
    for pattern in prometheus["rule_files"]:
        in_container = PurePosixPath(
            *_normalise((config_dir / PurePosixPath(pattern).parent).parts)
        )
        assert mounts.get(str(in_container)) == "alert_rules", (pattern, mounts)
        assert list((PROMETHEUS_YML.parent / pattern).parent.glob(PurePosixPath(pattern).name))


def _normalise(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            out.pop()
        elif part != ".":
            out.append(part)
    return out


def test_alertmanager_mounts_match_its_config(
    services: dict[str, dict[str, Any]], alertmanager: dict[str, Any]
) -> None:
    service = services["alertmanager"]
    mounts = bind_mounts(service)
    assert mounts[flag(service, "config.file")] == "deploy/alertmanager.yml"
    for receiver in alertmanager["receivers"]:
        (webhook,) = receiver["webhook_configs"]
        assert (
            mounts[webhook["http_config"]["authorization"]["credentials_file"]]
            == "deploy/webhook_token"
        )


def receivers(alertmanager: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in alertmanager["receivers"]}


def test_alertmanager_webhook_reaches_the_receiver(
    services: dict[str, dict[str, Any]], alertmanager: dict[str, Any]
) -> None:
    route = alertmanager["route"]
    by_name = receivers(alertmanager)
    assert set(by_name) == {"breaker", "heartbeat"}
    assert route["receiver"] == "breaker"
    for name, send_resolved in (("breaker", True), ("heartbeat", False)):
        (webhook,) = by_name[name]["webhook_configs"]
        url = urlsplit(webhook["url"])
        assert (url.scheme, url.hostname, url.path) == ("http", "receiver", "/v1/alertmanager")
        assert url.port in container_ports(services["receiver"])
        assert webhook["send_resolved"] is send_resolved, name
        assert webhook.get("max_alerts", 0) == 0
        assert webhook["http_config"]["authorization"].get("type", "Bearer") == "Bearer"


def test_the_heartbeat_reuses_the_breaker_webhook(alertmanager: dict[str, Any]) -> None:
    """Same URL and same token (YAML anchors, so each is still written once for the e2e
    substitution); only send_resolved differs."""
    by_name = receivers(alertmanager)
    (breaker,) = by_name["breaker"]["webhook_configs"]
    (heartbeat,) = by_name["heartbeat"]["webhook_configs"]
    assert heartbeat["url"] == breaker["url"]
    assert heartbeat["http_config"] == breaker["http_config"]


def test_the_heartbeat_route(alertmanager: dict[str, Any]) -> None:
    """First child route, only the Watchdog, repeated well within the receiver's
    RECEIVER_HEARTBEAT_TIMEOUT_SECONDS default (300 s), not passed on to other routes."""
    first = alertmanager["route"]["routes"][0]
    assert first["receiver"] == "heartbeat"
    assert first["matchers"] == ['alertname="Watchdog"']
    assert not first.get("continue", False)
    repeat = first["repeat_interval"]
    assert re.fullmatch(r"\d+[sm]", repeat), repeat
    seconds = int(repeat[:-1]) * (60 if repeat.endswith("m") else 1)
    assert seconds * 4 <= 300, repeat


def test_alertmanager_timing(alertmanager: dict[str, Any]) -> None:
    route = alertmanager["route"]
    assert route["group_by"] == ["alertname", "tenant_id"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "1s",
        "2s",
        "1h",
    )


def test_prometheus_targets_are_the_compose_services(
    services: dict[str, dict[str, Any]], prometheus: dict[str, Any]
) -> None:
    assert prometheus["global"]["scrape_interval"] == "2s"
    assert prometheus["global"]["evaluation_interval"] == "2s"
    assert "external_labels" not in prometheus["global"]
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prometheus["scrape_configs"]
    }
    assert targets == {"receiver": ["receiver:8080"], "traffic": ["traffic:9100"]}
    for addresses in targets.values():
        for address in addresses:
            host, port = host_port(address)
            assert port in container_ports(services[host]), address
    (am,) = [
        t
        for c in prometheus["alerting"]["alertmanagers"]
        for s in c["static_configs"]
        for t in s["targets"]
    ]
    host, port = host_port(am)
    assert port in container_ports(services[host])


@pytest.mark.parametrize(
    ("path", "address"),
    [
        (PROMETHEUS_YML, "receiver:8080"),
        (PROMETHEUS_YML, "alertmanager:9093"),
        (PROMETHEUS_YML, "traffic:9100"),
        (ALERTMANAGER_YML, "receiver:8080"),
    ],
)
def test_each_address_is_written_once_for_the_e2e_substitution(path: Path, address: str) -> None:
    """The end-to-end test swaps these strings for local ports: one place each, no other
    spelling of the same host (a second occurrence would be rewritten too, or missed)."""
    text = path.read_text()
    assert text.count(address) == 1, (path.name, address)
    host = re.escape(address.split(":")[0])
    # The host with any port, or in a URL without the port: only the one address.
    spellings = re.findall(rf"(?<![\w.-]){host}:\d+|//{host}(?![\w.-]|:\d)", text)
    assert spellings == [address], (path.name, spellings)


# --- Grafana -----------------------------------------------------------------------------


def _grafana_yaml(relative: str) -> dict[str, Any]:
    return yaml.safe_load((GRAFANA / relative).read_text())  # type: ignore[no-any-return]


def test_grafana_listens_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    assert container_ports(grafana) == {3000: 3000}
    assert host_ips(grafana) == {"127.0.0.1"}, grafana["ports"]


def test_grafana_admin_password_is_a_secret_not_the_default(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    grafana = services["grafana"]
    settings = env(grafana)
    assert "GF_SECURITY_ADMIN_PASSWORD" not in settings, "no password in the compose file"
    path = settings["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert path == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in grafana["secrets"]
    assert compose["secrets"]["grafana_admin_password"]["file"] == "./deploy/grafana_admin_password"
    assert settings["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert settings["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_grafana_provisioning_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    mounts = bind_mounts(services["grafana"])
    assert mounts["/etc/grafana/provisioning"] == "deploy/grafana/provisioning"
    provider = _grafana_yaml("provisioning/dashboards/dashboards.yml")["providers"][0]
    dashboards_in_container = provider["options"]["path"]
    assert mounts[dashboards_in_container] == "deploy/grafana/dashboards"
    home = env(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home).parent == PurePosixPath(dashboards_in_container)
    assert (GRAFANA / "dashboards" / PurePosixPath(home).name).is_file()


def test_grafana_data_sources_reach_prometheus_and_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    sources = {
        d["uid"]: d
        for d in _grafana_yaml("provisioning/datasources/datasources.yml")["datasources"]
    }
    assert set(sources) == {"prometheus", "postgres"}
    prom = urlsplit(sources["prometheus"]["url"])
    assert prom.hostname == "prometheus" and prom.port in container_ports(services["prometheus"])
    pg = sources["postgres"]
    host, port = host_port(pg["url"])
    assert (host, port) == ("postgres", 5432)
    assert pg["jsonData"]["database"] == env(services["postgres"])["POSTGRES_DB"]
    # A read-only role, its password from the secret both containers get.
    assert pg["user"] == "grafana_reader"
    assert pg["secureJsonData"]["password"] == "$__file{/run/secrets/grafana_db_password}"
    for name in ("grafana", "postgres"):
        assert "grafana_db_password" in services[name]["secrets"], name
    init = bind_mounts(services["postgres"])
    script = init["/docker-entrypoint-initdb.d/grafana-reader.sh"]
    text = (ROOT / script).read_text()
    assert "grafana_reader" in text and "/run/secrets/grafana_db_password" in text
    assert "GRANT SELECT" in text and "INSERT" not in text


def test_the_dashboard_uses_the_provisioned_data_sources() -> None:
    import json

    dashboard = json.loads((GRAFANA / "dashboards" / "blast-radius.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {"prometheus", "postgres"}
