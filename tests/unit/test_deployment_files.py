"""The deployment files, checked without Docker or Kubernetes: docker-compose.yml, the one Dockerfile, the Redis
and PostgreSQL set-up, .env.example and the manifests in infra/k8s/ agree with the code they deploy — every
service is there, on its port, with only real settings (derived from each service's pydantic-settings class)
and every required one, health checks, distinct consumer names per replica."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from safe_procurement.services.launcher import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "docker" / "service.Dockerfile"
REDIS_CONF = ROOT / "infra" / "redis" / "redis.conf"
INIT_SQL = ROOT / "infra" / "postgres" / "init.sql"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "infra" / "k8s"
NAMESPACE = "safe-procurement"
SCALED = ("origin_verification", "loan_disbursement")  # the consumers that run two replicas
UVICORN_GRACE_S = 5  # services/runner.py: uvicorn's graceful window is SHUTDOWN_TIMEOUT_S + 5
COMPOSE_ONLY_VARS = {"REDIS_HOST_PORT", "POSTGRES_HOST_PORT", "SAFE_DB_PASSWORD", "SAFE_BIND_ADDRESS", "SAFE_VERSION",
                     "PROMETHEUS_HOST_PORT", "GRAFANA_HOST_PORT"}
# what an operator puts in .env for the variables docker-compose.yml requires (`${VAR:?…}`: no default)
REQUIRED_EXAMPLES = {"SAFE_TOKENS": "operator:a-real-operator-token,auditor:a-real-auditor-token",
                     "SAFE_DB_PASSWORD": "a-real-password",
                     "SAFE_EVENT_KEYS": ",".join(f"{s}:k1:a-real-event-key-of-{s}-0000000000" for s in
                                                 ("applications", "origin_verification", "partner_registry",
                                                  "loan_disbursement"))}


# --- settings, derived from the code --------------------------------------------------------------------


def settings_class(service: str) -> Any:
    config = importlib.import_module(f"safe_procurement.services.{service}.config")
    return config.Settings


def setting_names(settings_cls: Any) -> dict[str, str]:
    """Environment variable → field, as pydantic-settings reads them: the alias, else env_prefix + field name.

    `service_name` is left out: it is a constant of the service, not something to configure."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field_name, field in settings_cls.model_fields.items():
        if field_name == "service_name":
            continue
        alias = field.validation_alias or field.alias
        if isinstance(alias, str):
            names[alias.upper()] = field_name
        elif isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names[choice.upper()] = field_name
        else:
            names[f"{prefix}{field_name}".upper()] = field_name
    return names


def prefix_of(service: str) -> str:
    return service.upper() + "_"


def default_of(service: str, field: str) -> Any:
    return settings_class(service).model_fields[field].default


def interpolate(value: Any) -> str:
    """Compose's `${VAR:-default}` / `${VAR-default}` / `${VAR}`, with an empty host environment; a required
    `${VAR:?message}` gets the operator's value from REQUIRED_EXAMPLES."""

    def one(m: re.Match[str]) -> str:
        if m.group(2) == "?":
            return REQUIRED_EXAMPLES[m.group(1)]
        return m.group(3) or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}", one, str(value))


def assert_required_settings(env: dict[str, str], service: str, where: str) -> None:
    prefix = prefix_of(service)
    assert env.get("REDIS_URL"), f"{where}: REDIS_URL is not set"
    assert env.get(f"{prefix}DATABASE_URL"), f"{where}: {prefix}DATABASE_URL is not set"
    assert env.get("SAFE_TOKENS") or env.get("SAFE_ENV", "dev") == "dev", (
        f"{where}: outside SAFE_ENV=dev the service refuses to start without SAFE_TOKENS"
    )


def assert_valid_settings(names: set[str], service: str, where: str) -> None:
    valid = setting_names(settings_class(service))
    unknown = sorted(n for n in names if n not in valid)
    assert not unknown, f"{where}: not settings of services.{service}.config.Settings: {unknown}"


# --- docker-compose.yml ---------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def platform_containers() -> dict[str, tuple[str, dict[str, Any]]]:
    """Compose service name → (platform service it runs, definition): every container built from our Dockerfile."""
    out = {}
    for name, svc in compose_services().items():
        build = svc.get("build")
        if build is not None and build["args"]["SERVICE"] != "console":  # the console: test_console_deployment.py
            out[name] = (build["args"]["SERVICE"], svc)
    assert out, "docker-compose.yml builds no container from the service Dockerfile"
    return out


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def container_ports(svc: dict[str, Any]) -> list[tuple[str | None, int]]:
    """(host port or None, container port) of every `ports:` entry."""
    out = []
    for spec in svc.get("ports", []):
        if isinstance(spec, dict):
            out.append((str(spec.get("published")) if spec.get("published") else None, int(spec["target"])))
            continue
        parts = interpolate(spec).split("/")[0].split(":")
        out.append((parts[-2] if len(parts) > 1 else None, int(parts[-1])))
    return out


def seconds(duration: str | int | float) -> float:
    if isinstance(duration, int | float):
        return float(duration)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def test_every_platform_service_runs_in_docker_compose() -> None:
    running = {service for service, _ in platform_containers().values()}

    assert running == set(SERVICES)


def test_every_service_container_is_built_from_the_one_dockerfile_with_its_service_arg() -> None:
    for name, (service, svc) in platform_containers().items():
        build = svc["build"]
        assert (ROOT / build.get("context", ".")).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert service in SERVICES, f"{name}: build arg SERVICE={service!r} is not a platform service"
        assert name == service or name.startswith(f"{service}_"), f"{name} builds {service}"
        assert int(build["args"]["PORT"]) == SERVICES[service], f"{name}: PORT build arg (EXPOSE)"


def test_each_container_listens_on_its_launcher_port_and_publishes_it_once() -> None:
    host_ports: list[str] = []
    for name, (service, svc) in platform_containers().items():
        env = environment(svc)
        port = SERVICES[service]
        assert env.get(f"{prefix_of(service)}PORT") == str(port), f"{name}: {prefix_of(service)}PORT"
        assert env.get(f"{prefix_of(service)}HOST") == "0.0.0.0", f"{name}: must bind every interface"
        published = container_ports(svc)
        assert published, f"{name}: no published port"
        assert all(target == port for _, target in published), f"{name}: {published}"
        host_ports += [host for host, _ in published if host]
    assert len(host_ports) == len(set(host_ports)), f"host ports collide: {host_ports}"
    first_replicas = {service: svc for name, (service, svc) in platform_containers().items() if name == service}
    for service, svc in first_replicas.items():
        assert (str(SERVICES[service]), SERVICES[service]) in container_ports(svc), f"{service} not on its own port"


@pytest.mark.parametrize("name", sorted(platform_containers()))
def test_every_variable_a_container_sets_is_a_setting_of_its_service(name: str) -> None:
    service, svc = platform_containers()[name]

    assert_valid_settings(set(environment(svc)), service, f"docker-compose {name}")


@pytest.mark.parametrize("name", sorted(platform_containers()))
def test_no_container_misses_a_required_setting(name: str) -> None:
    service, svc = platform_containers()[name]

    assert_required_settings(environment(svc), service, f"docker-compose {name}")


@pytest.mark.parametrize("name", sorted(platform_containers()))
def test_a_container_environment_yields_valid_settings_for_production(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service, svc = platform_containers()[name]
    settings_cls = settings_class(service)
    for var in setting_names(settings_cls):
        monkeypatch.delenv(var, raising=False)
    for var, value in environment(svc).items():
        monkeypatch.setenv(var, value)

    s = settings_cls()

    from safe_procurement.shared.kit.auth import TokenStore

    assert s.safe_env == "production"
    TokenStore(s.safe_tokens, dev=s.is_dev)  # the default tokens parse, so the service starts
    assert s.port == SERVICES[service]
    assert s.host == "0.0.0.0"
    assert s.database_url.startswith("postgresql+asyncpg://")
    # the service's own Redis user (infra/redis/users.acl), and event keys it can sign with
    assert s.redis_url.startswith(f"redis://{service}:") and "@redis:6379/" in s.redis_url
    from safe_procurement.shared.kit.signing import Keyring

    Keyring(s.safe_event_keys, service=service, key_id=s.event_key_id, dev=s.is_dev)


def test_every_service_container_has_a_readiness_healthcheck_on_its_port() -> None:
    for name, (service, svc) in platform_containers().items():
        test = svc.get("healthcheck", {}).get("test")
        assert test, f"{name}: no healthcheck"
        command = " ".join(test) if isinstance(test, list) else test
        assert f"127.0.0.1:{SERVICES[service]}/health/ready" in command, f"{name}: {command}"
        assert "curl" not in command and "wget" not in command, "python:3.11-slim has neither curl nor wget"


def test_every_service_container_waits_for_a_healthy_redis_and_postgres() -> None:
    for name, (_, svc) in platform_containers().items():
        depends = svc.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency in ("redis", "postgres"):
            assert depends.get(dependency, {}).get("condition") == "service_healthy", f"{name} → {dependency}"


def test_redis_and_postgres_have_healthchecks_and_persistent_volumes() -> None:
    services = compose_services()
    redis, postgres = services["redis"], services["postgres"]

    assert redis["image"].split(":")[1].startswith("7")
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert postgres["image"].split(":")[1].startswith("16")
    assert "pg_isready" in postgres["healthcheck"]["test"]
    volumes = set(compose().get("volumes", {}))
    for svc, path in ((redis, "/data"), (postgres, "/var/lib/postgresql/data")):
        mounts = dict(v.split(":")[:2][::-1] for v in svc["volumes"])
        assert mounts.get(path) in volumes, f"{path} is not on a named volume"


def test_redis_runs_the_mounted_conf_with_aof_and_noeviction() -> None:
    redis = compose_services()["redis"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    conf_in_container = next(arg for arg in redis["command"] if arg.endswith(".conf"))

    assert (ROOT / mounts[conf_in_container]).resolve() == REDIS_CONF
    conf = redis_directives(REDIS_CONF.read_text())
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["dir"] == "/data"


def redis_directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key.lower()] = value.strip().strip('"')
    return out


def test_init_sql_creates_every_database_and_role_the_compose_file_references() -> None:
    postgres = compose_services()["postgres"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in postgres["volumes"]}
    assert (ROOT / mounts["/docker-entrypoint-initdb.d/init.sql"]).resolve() == INIT_SQL
    databases, roles = init_sql_objects()

    for name, (service, svc) in platform_containers().items():
        url = urlsplit(environment(svc)[f"{prefix_of(service)}DATABASE_URL"])
        assert url.hostname == "postgres", name
        assert url.path.lstrip("/") in databases, f"{name}: database {url.path} is not created by init.sql"
        assert url.username in roles, f"{name}: role {url.username} is not created by init.sql"
    assert set(SERVICES) <= databases, "one database per service"


def init_sql_objects() -> tuple[set[str], set[str]]:
    sql = INIT_SQL.read_text()
    databases = set(re.findall(r"^\s*CREATE DATABASE\s+(\w+)", sql, re.IGNORECASE | re.MULTILINE))
    roles = set(re.findall(r"^\s*CREATE (?:ROLE|USER)\s+(\w+)", sql, re.IGNORECASE | re.MULTILINE))
    return databases, roles


def test_scalable_services_run_two_replicas_with_distinct_consumer_names() -> None:
    names: list[str] = []
    replicas: dict[str, int] = {}
    for name, (service, svc) in platform_containers().items():
        consumer = environment(svc).get(f"{prefix_of(service)}CONSUMER_NAME")
        assert consumer, f"{name}: every replica needs a stable consumer name"
        names.append(consumer)
        replicas[service] = replicas.get(service, 0) + 1
        assert "deploy" not in svc or "replicas" not in svc["deploy"], f"{name}: replicas clash with fixed ports"

    assert len(names) == len(set(names)), f"consumer names repeat: {names}"
    for service in SCALED:
        assert replicas[service] >= 2, f"{service} should run two replicas"


def test_containers_get_longer_to_stop_than_their_shutdown_timeout() -> None:
    for name, (service, svc) in platform_containers().items():
        timeout = float(
            environment(svc).get(f"{prefix_of(service)}SHUTDOWN_TIMEOUT_S", default_of(service, "shutdown_timeout_s"))
        )
        grace = seconds(svc.get("stop_grace_period", "10s"))  # compose's default is 10 s
        assert grace > timeout + UVICORN_GRACE_S, f"{name}: stop_grace_period {grace}s ≤ {timeout}s + 5s"


# --- .env.example ---------------------------------------------------------------------------------------


def env_example_names() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def test_env_example_lists_every_setting_of_every_service() -> None:
    listed = env_example_names()

    for service in SERVICES:
        missing = sorted(set(setting_names(settings_class(service))) - listed)
        assert not missing, f".env.example does not document: {missing}"


def test_env_example_lists_nothing_that_is_not_a_setting() -> None:
    valid = set(COMPOSE_ONLY_VARS)
    for service in SERVICES:
        valid |= set(setting_names(settings_class(service)))

    assert env_example_names() - valid == set()


def test_compose_has_no_default_secret_and_env_example_ships_none() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == set(REQUIRED_EXAMPLES)  # compose refuses to start without them
    assert "dev-operator" not in text and "safe:safe@" not in text
    assert re.search(r"^SAFE_TOKENS=", ENV_EXAMPLE.read_text(), re.MULTILINE) is None
    for _, svc in platform_containers().values():
        env = environment(svc)
        assert env["SAFE_TOKENS"] == REQUIRED_EXAMPLES["SAFE_TOKENS"]
        assert urlsplit(next(v for k, v in env.items() if k.endswith("_DATABASE_URL"))).password == \
            REQUIRED_EXAMPLES["SAFE_DB_PASSWORD"]
    postgres = compose_services()["postgres"]["environment"]
    assert interpolate(postgres["POSTGRES_PASSWORD"]) == REQUIRED_EXAMPLES["SAFE_DB_PASSWORD"]
    assert "SAFE_DB_PASSWORD" in (ROOT / "infra" / "postgres" / "set-password.sh").read_text()


def test_compose_publishes_on_loopback_unless_asked_and_pins_images() -> None:
    for name, svc in compose_services().items():
        for spec in svc.get("ports", []):
            assert spec.startswith("${SAFE_BIND_ADDRESS:-127.0.0.1}:"), (name, spec)
        image = svc.get("image")
        assert image, f"{name} has no image name"
        repo, _, tag = image.rpartition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", interpolate(tag)), (name, image)


# --- the Dockerfile -------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_the_dockerfile_is_one_recipe_for_every_service() -> None:
    instructions = dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in instructions:
        by_keyword.setdefault(keyword, []).append(rest)

    assert by_keyword["FROM"] == ["python:3.11-slim"]
    assert any(arg.split("=")[0] == "SERVICE" for arg in by_keyword["ARG"])
    assert any("pip install" in run and " ." in run for run in by_keyword["RUN"]), "installs the project"
    assert by_keyword["EXPOSE"], "EXPOSE the service port"
    cmd = by_keyword["CMD"][-1]
    assert "python -m safe_procurement.services.${SERVICE}" in cmd
    assert "exec " in cmd, "python must be PID 1 to receive SIGTERM"


def test_the_dockerfile_runs_as_a_non_root_user() -> None:
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]

    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_the_dockerfile_healthcheck_probes_readiness_with_python() -> None:
    healthchecks = [rest for keyword, rest in dockerfile_instructions() if keyword == "HEALTHCHECK"]

    assert len(healthchecks) == 1
    assert "/health/ready" in healthchecks[0]
    assert '"python"' in healthchecks[0] and "curl" not in healthchecks[0]


def test_the_dockerfile_binds_every_service_to_all_interfaces() -> None:
    envs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "ENV")

    for service in SERVICES:
        assert f"{prefix_of(service)}HOST=0.0.0.0" in envs


def test_the_docker_build_context_leaves_out_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}

    for entry in (".venv", "var", ".git", "bench-results", "node_modules"):
        assert entry in ignored
    assert "__pycache__" in ignored or "**/__pycache__" in ignored


# --- Kubernetes -----------------------------------------------------------------------------------------

API_VERSIONS = {
    "Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1", "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1", "StatefulSet": "apps/v1", "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "NetworkPolicy": "networking.k8s.io/v1",
}


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    out = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return tuple(out)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def deployment_of(service: str) -> dict[str, Any]:
    deployments = of_kind("Deployment")
    name = service.replace("_", "-")
    assert name in deployments, f"no Deployment {name} for {service}"
    return deployments[name]


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def data_keys(kind: str, name: str) -> set[str]:
    doc = of_kind(kind).get(name)
    assert doc is not None, f"{kind} {name} is referenced but not defined"
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {})


def data_values(kind: str, name: str) -> dict[str, str]:
    doc = of_kind(kind)[name]
    return {**(doc.get("data") or {}), **(doc.get("stringData") or {})}


def pod_environment(container: dict[str, Any]) -> dict[str, str | None]:
    """Every variable the container sees: envFrom sources first, then `env` (which wins); None when not literal."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(data_values("ConfigMap", source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(data_values("Secret", source["secretRef"]["name"]))
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"]) if "value" in item else None
    return env


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"named port {port!r} is not declared"
    return int(named[port])


def test_k8s_manifests_parse_and_have_known_kinds_names_and_the_namespace() -> None:
    assert manifests(), "no manifests in infra/k8s"
    for path, doc in manifests():
        assert doc.get("kind") in API_VERSIONS, f"{path}: unknown kind {doc.get('kind')}"
        assert doc.get("apiVersion") == API_VERSIONS[doc["kind"]], f"{path}: {doc['kind']} apiVersion"
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without a name"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{path}: {doc['kind']} {doc['metadata']['name']}"
    assert NAMESPACE in of_kind("Namespace")


def test_k8s_names_are_unique_per_kind() -> None:
    seen = [(doc["kind"], doc["metadata"]["name"]) for _, doc in manifests()]

    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("service", list(SERVICES))
def test_k8s_deployment_probes_readiness_and_liveness_on_the_service_port(service: str) -> None:
    container = container_of(deployment_of(service))
    ready = container["readinessProbe"]["httpGet"]
    live = container["livenessProbe"]["httpGet"]

    assert ready["path"] == "/health/ready"
    assert port_number(container, ready["port"]) == SERVICES[service]
    assert live["path"] == "/health/live"
    assert port_number(container, live["port"]) == SERVICES[service]
    assert pod_environment(container).get(f"{prefix_of(service)}PORT") == str(SERVICES[service])


@pytest.mark.parametrize("service", list(SERVICES))
def test_k8s_deployment_sets_only_real_settings_and_every_required_one(service: str) -> None:
    container = container_of(deployment_of(service))
    env = pod_environment(container)

    assert_valid_settings(set(env), service, f"k8s Deployment {service}")
    present = {k: (v if v is not None else "<from a secret>") for k, v in env.items()}
    assert_required_settings(present, service, f"k8s Deployment {service}")
    assert env.get(f"{prefix_of(service)}HOST") == "0.0.0.0"


@pytest.mark.parametrize("service", list(SERVICES))
def test_k8s_secret_references_exist(service: str) -> None:
    env = container_of(deployment_of(service)).get("env", [])
    refs = [item["valueFrom"]["secretKeyRef"] for item in env if "secretKeyRef" in item.get("valueFrom", {})]
    assert refs, "the tokens and the database URL come from a Secret"
    for ref in refs:
        assert ref["key"] in data_keys("Secret", ref["name"]), f"{ref} is not in the Secret"


@pytest.mark.parametrize("service", list(SERVICES))
def test_k8s_consumer_name_is_the_pod_name_from_the_downward_api(service: str) -> None:
    env = {item["name"]: item for item in container_of(deployment_of(service)).get("env", [])}
    item = env.get(f"{prefix_of(service)}CONSUMER_NAME")

    assert item is not None, "every replica needs its own consumer name"
    assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("service", list(SERVICES))
def test_k8s_pods_get_longer_to_stop_than_their_shutdown_timeout(service: str) -> None:
    deployment = deployment_of(service)
    container = container_of(deployment)
    timeout = float(
        pod_environment(container).get(f"{prefix_of(service)}SHUTDOWN_TIMEOUT_S")
        or default_of(service, "shutdown_timeout_s")
    )
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_s = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)

    assert grace > timeout
    assert grace > pre_stop_s + timeout + UVICORN_GRACE_S


@pytest.mark.parametrize("service", list(SERVICES))
def test_k8s_deployment_has_resources_and_the_replicas_it_needs(service: str) -> None:
    deployment = deployment_of(service)
    resources = container_of(deployment)["resources"]

    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"] == "256Mi"
    assert deployment["spec"]["replicas"] == (2 if service in SCALED else 1)
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_selectors_match_their_pod_template_labels() -> None:
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in of_kind(kind).items():
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{kind} {name}: {selector} vs {labels}"


def test_k8s_services_target_existing_workloads_and_their_ports() -> None:
    workloads = list(of_kind("Deployment").values()) + list(of_kind("StatefulSet").values())
    for name, svc in of_kind("Service").items():
        if svc["spec"].get("type") == "ExternalName":
            assert svc["spec"]["externalName"], name
            continue
        selector = svc["spec"]["selector"]
        matching = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert matching, f"Service {name} selects no workload"
        for port in svc["spec"]["ports"]:
            for workload in matching:
                container = container_of(workload)
                port_number(container, port.get("targetPort", port["port"]))
    for service in SERVICES:
        service_doc = of_kind("Service")[service.replace("_", "-")]
        assert [p["port"] for p in service_doc["spec"]["ports"]] == [SERVICES[service]]


def test_k8s_redis_is_a_statefulset_with_aof_on_a_persistent_volume() -> None:
    redis = of_kind("StatefulSet")["redis"]
    spec = redis["spec"]
    container = container_of(redis)
    config_volume = next(v for v in spec["template"]["spec"]["volumes"] if "configMap" in v)
    conf_key, conf = next(iter(data_values("ConfigMap", config_volume["configMap"]["name"]).items()))
    directives = redis_directives(conf)

    assert conf_key == "redis.conf" and any(arg.endswith("/redis.conf") for arg in container["command"])
    assert directives["appendonly"] == "yes"
    assert directives["maxmemory-policy"] == "noeviction"
    data_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directives["dir"])
    assert data_mount["name"] in {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    assert "readinessProbe" in container


def test_k8s_database_urls_name_the_databases_init_sql_creates() -> None:
    databases, roles = init_sql_objects()
    for service in SERVICES:
        env = {item["name"]: item for item in container_of(deployment_of(service))["env"]}
        ref = env[f"{prefix_of(service)}DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        url = urlsplit(data_values("Secret", ref["name"])[ref["key"]])
        assert url.scheme == "postgresql+asyncpg"
        assert url.path.lstrip("/") == service and service in databases
        assert url.username in roles


def test_k8s_readme_says_how_to_apply() -> None:
    readme = (K8S / "README.md").read_text()

    assert "kubectl apply" in readme


# --- optional: the real tools, when present -------------------------------------------------------------


def test_docker_compose_accepts_the_file_when_a_docker_engine_answers() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    try:
        if subprocess.run([docker, "info"], capture_output=True, timeout=10).returncode != 0:
            pytest.skip("no docker engine answers")
    except subprocess.TimeoutExpired:
        pytest.skip("docker engine does not answer")

    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, timeout=60,
        cwd=ROOT,
    )

    assert result.returncode == 0, result.stderr
