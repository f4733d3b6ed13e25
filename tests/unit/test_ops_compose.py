"""docker-compose.yml and the Dockerfile, read as data: what the schema cannot say. Every service
has a health check (one-shot jobs excepted), the worker waits for its migrations, optional
services sit behind profiles, the worker's environment names real settings, the commands parse
with the real CLI, and the mounted configuration files are where the services look for them.
(The file's validity against the Compose Specification is tests/integration/test_ops_config.py.)"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.cli import build_parser
from consumer.settings import SECTIONS, WorkerSettings, env_name

REPO = Path(__file__).resolve().parents[2]
CORE = {"kafka", "kafka-init", "postgres", "redis", "migrate", "worker"}
OPTIONAL = {"prometheus", "grafana", "loadgen"}


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with every variable unset, and `$$` as a literal `$`."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


def _one_shots() -> set[str]:
    """Services others wait on to complete, that are never restarted."""
    waited = {
        name
        for service in _services().values()
        for name, condition in (service.get("depends_on") or {}).items()
        if condition["condition"] == "service_completed_successfully"
    }
    return {name for name in waited if _services()[name].get("restart") == "no"}


def test_the_stack_has_the_core_and_optional_services() -> None:
    assert set(_services()) == CORE | OPTIONAL
    for name in CORE:
        assert "profiles" not in _services()[name], f"{name} must start by default"
    for name in OPTIONAL:
        assert _services()[name]["profiles"], f"{name} must be behind a profile"


def test_every_long_running_service_has_a_health_check() -> None:
    assert _one_shots() == {"migrate", "kafka-init"}
    for name, service in _services().items():
        if name in _one_shots():
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert service["restart"] == "unless-stopped", name


def test_images_are_pinned_and_the_expected_ones() -> None:
    images = {name: s["image"] for name, s in _services().items()}
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    assert images["kafka"].startswith("apache/kafka:")
    assert images["postgres"] == "postgres:15"
    built = {name for name, s in _services().items() if "build" in s}
    assert built == {"migrate", "worker", "loadgen"}
    assert len({images[name] for name in built}) == 1, "one image for worker, migrate, loadgen"


def test_kafka_runs_in_kraft_mode_with_topics_created_up_front() -> None:
    kafka = _services()["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in json.dumps(_compose()).lower()
    assert len(kafka["CLUSTER_ID"]) == 22  # a base64 UUID, as kafka-storage format requires
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    script = _interpolate(_services()["kafka-init"]["command"][0])
    env = _services()["worker"]["environment"]
    for topic in (env["CONSUMER_KAFKA_TOPIC"], env["CONSUMER_KAFKA_DLQ_TOPIC"]):
        assert re.search(rf"\b{re.escape(topic)}:\d+\b", script), f"{topic} is not created"


def test_the_dead_letter_topic_takes_what_the_worker_may_send() -> None:
    """Issue 17: both topics at Kafka's default limit refused the dead letter of a message that
    arrived compressed; the dead-letter topic must take any message the input topic takes,
    with room for the dead-letter headers, and the broker must take the dead-letter topic's."""
    from consumer.settings import KafkaSettings
    from consumer.worker import DLQ_HEADROOM

    script = _interpolate(_services()["kafka-init"]["command"][0])
    env = _services()["worker"]["environment"]
    limits = {name: int(limit) for name, limit in re.findall(r"\b([a-z-]+):\d+:(\d+)\b", script)}
    topic, dlq = env["CONSUMER_KAFKA_TOPIC"], env["CONSUMER_KAFKA_DLQ_TOPIC"]
    assert limits[dlq] >= limits[topic] + DLQ_HEADROOM
    assert limits[dlq] >= KafkaSettings().max_message_bytes + DLQ_HEADROOM
    broker = int(_services()["kafka"]["environment"]["KAFKA_MESSAGE_MAX_BYTES"])
    assert broker >= max(limits.values())
    assert "--add-config max.message.bytes" in script  # also on a topic created before


def test_the_worker_waits_for_migrations_topics_and_redis() -> None:
    worker = _services()["worker"]
    assert worker["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "kafka-init": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }
    assert _services()["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert _services()["migrate"]["command"] == ["migrate"]
    drain = WorkerSettings().join_timeout  # the drain waits at most this long for the last batch
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace > drain, "docker would kill the worker before it drains"


def test_the_consumer_environment_names_real_settings() -> None:
    known = {
        env_name(section, f.name)
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }
    for name in ("migrate", "worker", "loadgen"):
        unknown = set(_services()[name]["environment"]) - known
        assert not unknown, f"{name}: no setting is read from {sorted(unknown)}"
    env = _services()["worker"]["environment"]
    assert _interpolate(env["DATABASE_URL"]).startswith("postgresql://consumer:")
    assert env["CONSUMER_WORKER_HEALTHCHECK_FILE"] in " ".join(
        _services()["worker"]["healthcheck"]["test"]
    )


@pytest.mark.parametrize("name", ["migrate", "worker", "loadgen"])
def test_consumer_commands_parse_with_the_real_cli(name: str) -> None:
    command = [_interpolate(part) for part in _services()[name]["command"]]
    args = build_parser().parse_args(command)
    if name == "loadgen":
        assert args.count == 0 and args.rate > 0, "the load generator runs until stopped"
        assert args.create_projects >= 1 and 0 < args.bad_ratio < 1


def test_prometheus_and_grafana_read_the_repository_configuration() -> None:
    prometheus = _services()["prometheus"]
    assert "./config/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    target = scrape["scrape_configs"][0]["dns_sd_configs"][0]
    port = _services()["worker"]["environment"]["CONSUMER_WORKER_METRICS_PORT"]
    assert target["names"] == ["worker"] and target["port"] == int(port)
    assert port in _services()["worker"]["expose"]

    grafana = _services()["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"])
    assert mounts["./config/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (REPO / "config/grafana/provisioning/dashboards/generic-consumer.yml").read_text()
    )["providers"][0]
    assert mounts["./config/grafana/dashboards"] == provider["options"]["path"]
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent.as_posix() == provider["options"]["path"]
    assert (REPO / "config/grafana/dashboards" / home.name).is_file()
    source = yaml.safe_load(
        (REPO / "config/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert source["url"] == "http://prometheus:9090"


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_image_is_slim_python_311_and_runs_as_a_non_root_user() -> None:
    lines = _dockerfile()
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert 'ENTRYPOINT ["consumer"]' in final and 'CMD ["run"]' in final
    assert any(line.startswith("HEALTHCHECK ") for line in final)
    assert f"EXPOSE {WorkerSettings().metrics_port}" in final


def test_the_image_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for line in _dockerfile():
        if line.startswith("COPY ") and "--from=" not in line:
            sources = shlex.split(line)[1:-1]
            for source in sources:
                assert (REPO / source).exists(), f"{source} does not exist"
                assert source.rstrip("/") not in ignored, f"{source} is in .dockerignore"
    assert {".git", ".venv", ".cache", "tests"} <= ignored
