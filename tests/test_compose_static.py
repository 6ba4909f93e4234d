"""Static checks of docker-compose.yml, the Dockerfile and the collector configs in exporters/ (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
EXPORTERS = REPO / "exporters"
COLLECTOR_CONFIGS = sorted(EXPORTERS.glob("otelcol-*.yaml"))
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose():
    return load(COMPOSE)


def service_named(compose, image_prefix: str):
    matches = [(n, s) for n, s in compose["services"].items() if s.get("image", "").startswith(image_prefix)]
    assert len(matches) == 1, f"expected one service with image {image_prefix}*"
    return matches[0]


def collector_config_of(compose) -> tuple[str, dict, Path]:
    name, svc = service_named(compose, "otel/opentelemetry-collector-contrib")
    configs = [a.split("=", 1)[1] for a in svc.get("command", []) if a.startswith("--config=")]
    assert len(configs) == 1
    container_path = configs[0]
    for volume in svc.get("volumes", []):
        host, container = volume.split(":")[:2]
        if container_path.startswith(container.rstrip("/") + "/"):
            host_file = (REPO / host / container_path[len(container.rstrip("/")) + 1:]).resolve()
            assert host_file.is_file(), f"{container_path} maps to {host_file}, which does not exist"
            return name, svc, host_file
    raise AssertionError(f"no volume of {name} provides {container_path}")


def built_from(svc) -> list[str]:
    """The FROM images of a service's build (its Dockerfile), [] for an image-only service."""
    build = svc.get("build")
    if build is None:
        return []
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return re.findall(r"^FROM\s+(\S+)", (REPO / context / dockerfile).read_text(), re.M)


def test_compose_parses_and_has_the_services(compose):
    services = compose["services"]
    images = " ".join([s.get("image", "") for s in services.values()]
                      + [base for s in services.values() for base in built_from(s)])
    for needed in ("otel/opentelemetry-collector-contrib", "ghcr.io/mlflow/mlflow", "postgres", "jaegertracing/"):
        assert needed in images
    assert services["demo"]["build"] == "."


def test_every_image_is_pinned(compose):
    for name, svc in compose["services"].items():
        if "image" not in svc:
            assert "build" in svc, f"{name} has neither image nor build"
            continue
        image = svc["image"]
        if "@sha256:" in image:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} is not pinned to a version"
    for path in [REPO / "Dockerfile", *sorted((REPO / "docker").glob("*/Dockerfile"))]:
        for base in re.findall(r"^FROM\s+(\S+)", path.read_text(), re.M):
            assert re.match(r"[^:]+:v?\d", base) and not base.endswith(":latest"), (path, base)


def test_mlflow_image_is_built_with_the_driver_not_installed_at_start(compose):
    """Compose's MLflow server gets its PostgreSQL driver when the image is built (docker/mlflow/Dockerfile, FROM
    MLflow's pinned image, the driver pinned): the container needs no network when it starts."""
    svc = compose["services"]["mlflow"]
    (base,) = built_from(svc)
    assert re.fullmatch(r"ghcr\.io/mlflow/mlflow:v\d+\.\d+\.\d+", base), base
    dockerfile = (REPO / svc["build"] / "Dockerfile").read_text()
    installs = re.findall(r"^RUN pip install .*$", dockerfile, re.M)
    assert len(installs) == 1 and re.search(r'"psycopg\[binary\]==\d+\.\d+\.\d+"', installs[0]), installs
    command = " ".join(str(a) for a in svc["command"])
    assert "pip" not in command and "install" not in command, command
    assert svc["command"][:2] == ["mlflow", "server"]
    # the store URI names the driver the image has (SQLAlchemy < 2.1 would pick psycopg2 for postgresql://)
    assert re.search(r"--backend-store-uri postgresql\+psycopg://\S+@postgres:5432/", command), command
    # the tag says what is in it
    mlflow_version = base.rsplit(":v", 1)[1]
    driver_version = re.search(r"==(\d+\.\d+\.\d+)", installs[0]).group(1)
    assert svc["image"].endswith(f":{mlflow_version}-psycopg{driver_version}"), svc["image"]


def test_mounted_host_paths_exist(compose):
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert source.startswith("."), f"{name}: host path {source!r} should be relative to the repo"
            assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_dockerfile_copies_existing_files_and_installs_the_package():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    missing = []
    for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
        for source in line.split()[:-1]:
            if not (REPO / source).exists():
                missing.append(source)
    if missing == ["README.md"]:
        pytest.xfail("README.md (pyproject's readme) is written by the lead")
    assert not missing
    assert 'ag2-otel = "ag2_otel.cli:main"' in (REPO / "pyproject.toml").read_text()


def test_demo_is_configured_through_the_environment_and_agrees_with_compose(compose):
    from ag2_otel.config import load_settings

    services = compose["services"]
    demo_env = {k: str(v) for k, v in services["demo"]["environment"].items()}
    settings = load_settings(demo_env)  # validates every value the demo is given
    assert settings.otlp_enabled and settings.mlflow_enabled

    collector_name, collector, _ = collector_config_of(compose)
    endpoint = urlsplit(demo_env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == collector_name
    published = {int(p.split(":")[-1]) for p in collector.get("ports", [])}
    assert endpoint.port == {"grpc": 4317, "http/protobuf": 4318}[settings.otlp_protocol]
    assert endpoint.port in published or endpoint.port in (4317, 4318)

    tracking = urlsplit(demo_env["MLFLOW_TRACKING_URI"])
    assert tracking.hostname in services
    assert f"--port {tracking.port}" in " ".join(services[tracking.hostname]["command"])
    assert demo_env.get("MLFLOW_ENABLE_OTLP_EXPORTER") == "false"  # else MLflow diverts its own spans to OTLP


def pipeline_components(config: dict):
    """(kind, name) pairs each pipeline uses, and the component ids defined at top level."""
    defined = {kind: set((config.get(kind) or {}).keys()) for kind in ("receivers", "processors", "exporters",
                                                                       "extensions")}
    used = []
    service = config["service"]
    for ext in service.get("extensions", []):
        used.append(("extensions", ext))
    for pipeline_name, pipeline in service["pipelines"].items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                used.append((kind, component))
    return defined, used


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_config_pipelines_reference_defined_components(path):
    config = load(path)
    defined, used = pipeline_components(config)
    for kind, component in used:
        assert component in defined[kind], f"{path.name}: {kind[:-1]} {component!r} is used but not defined"
    used_ids = {(k, c) for k, c in used}
    for kind in ("receivers", "exporters"):
        for component in defined[kind]:
            assert (kind, component) in used_ids, f"{path.name}: {kind[:-1]} {component!r} is defined but unused"
    # memory_limiter first, batch last, when present (the collector's documented order)
    for pipeline in config["service"]["pipelines"].values():
        processors = pipeline.get("processors", [])
        if "memory_limiter" in processors:
            assert processors[0] == "memory_limiter"
        if "batch" in processors:
            assert processors[-1] == "batch"


def test_there_are_the_documented_collector_configs():
    names = {p.name for p in COLLECTOR_CONFIGS}
    assert {"otelcol-mlflow.yaml", "otelcol-databricks.yaml", "otelcol-debug.yaml"} <= names
    readme = (EXPORTERS / "README.md").read_text()
    for name in names:
        assert name in readme, f"exporters/README.md does not mention {name}"


def test_mlflow_config_sends_experiment_header_to_v1_traces():
    config = load(EXPORTERS / "otelcol-mlflow.yaml")
    (exporter,) = config["exporters"].values()
    assert ENV_REF.fullmatch(exporter["headers"]["x-mlflow-experiment-id"])
    assert ENV_REF.fullmatch(exporter["traces_endpoint"])


def test_databricks_config_uses_secrets_only_from_env():
    text = (EXPORTERS / "otelcol-databricks.yaml").read_text()
    config = yaml.safe_load(text)
    (exporter,) = config["exporters"].values()
    assert exporter["traces_endpoint"] == "https://${env:DATABRICKS_HOST}/api/2.0/otel/v1/traces"
    assert exporter["headers"] == {
        "Authorization": "Bearer ${env:DATABRICKS_TOKEN}",
        "X-Databricks-UC-Table-Name": "${env:DATABRICKS_UC_TABLE}",
    }
    assert not re.search(r"dapi[0-9a-f]{8,}", text)  # no token pasted in
    assert "debug" not in config["exporters"]  # a debug exporter would print the spans, fine, but not headers


def test_compose_collector_env_and_endpoints_name_real_services(compose):
    services = compose["services"]
    _, collector, config_file = collector_config_of(compose)
    config = load(config_file)
    env = {k: str(v) for k, v in (collector.get("environment") or {}).items()}
    referenced = set(ENV_REF.findall(config_file.read_text()))
    assert referenced <= set(env), f"collector config needs {sorted(referenced - set(env))} in compose environment"

    def expand(value: str) -> str:
        return ENV_REF.sub(lambda m: env[m.group(1)], value)

    exporter_targets = []
    for name, exporter in config["exporters"].items():
        for key in ("endpoint", "traces_endpoint"):
            if key in exporter:
                exporter_targets.append((name, expand(exporter[key])))
    assert exporter_targets
    for name, target in exporter_targets:
        parsed = urlsplit(target if "://" in target else f"grpc://{target}")
        assert parsed.hostname in services, f"{name} -> {target}: {parsed.hostname} is not a compose service"
        if parsed.hostname == "mlflow":
            assert parsed.path == "/v1/traces" and parsed.port == 5000
            assert "--port 5000" in " ".join(services["mlflow"]["command"])
            assert re.search(r"--backend-store-uri postgresql(\+psycopg)?://", " ".join(services["mlflow"]["command"]))
        if parsed.hostname == "jaeger":
            assert parsed.port == 4317  # Jaeger's OTLP gRPC receiver
    targets = {urlsplit(t if "://" in t else f"grpc://{t}").hostname for _, t in exporter_targets}
    assert {"mlflow", "jaeger"} <= targets  # the collector fans out to both
    # MLflow's Host-header check must allow the name the collector uses
    assert "mlflow:5000" in " ".join(services["mlflow"]["command"])

    receivers = config["receivers"]["otlp"]["protocols"]
    receiver_ports = {int(p["endpoint"].rsplit(":", 1)[1]) for p in receivers.values()}
    published = {int(p.split(":")[-1]) for p in collector["ports"]}
    assert receiver_ports <= published
