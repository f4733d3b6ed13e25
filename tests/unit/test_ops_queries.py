"""The PromQL of the Grafana dashboard and of the alert rules: every expression parses, and every
metric it reads is one the worker declares. (That they appear on a running worker's `/metrics`
is checked in tests/integration/test_ops_metrics.py, with the helpers defined here.)"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from arroyo.utils.metric_defs import MetricName
from prometheus_client import REGISTRY

from consumer import metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "config" / "grafana" / "dashboards" / "generic-consumer.json"
ALERTS = REPO / "config" / "prometheus" / "alerts.yml"
PROMETHEUS = REPO / "config" / "prometheus" / "prometheus.yml"

# Grafana replaces these before the query reaches Prometheus; give them plausible values.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$instance": ".*",
}
# Series Prometheus makes itself for every target; the worker never exports them.
PROMETHEUS_SERIES = frozenset({"up"})


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects. Raises ValueError if it does not parse."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    try:
        tree = promql_parser.parse(expression)
    except ValueError as error:
        raise ValueError(f"{expression!r} is not valid PromQL: {error}") from None
    names: set[str] = set()
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expression!r}"
            names.add(node.name)
            continue
        for child in ("lhs", "rhs", "expr", "param", "vector_selector"):
            found = getattr(node, child, None)
            if found is not None and not isinstance(found, str | int | float):
                stack.append(found)
        stack.extend(getattr(node, "args", None) or [])
    return names


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, by "panel title / refId"; template variables
    defined by `label_values(metric, label)` contribute their metric as a selector."""
    queries = {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in panels()
        for target in panel["targets"]
    }
    for variable in dashboard()["templating"]["list"]:
        definition = variable["definition"]
        assert definition.startswith("label_values(") and definition.endswith(")")
        metric = definition.removeprefix("label_values(").rsplit(",", 1)[0].strip()
        queries[f"variable ${variable['name']}"] = metric
    return queries


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_queries() -> dict[str, str]:
    return {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}


def used_metrics() -> dict[str, list[str]]:
    """Metric name -> where it is used, over the dashboard and the alerts (Prometheus's own
    series left out)."""
    used: dict[str, list[str]] = {}
    for where, expression in {**dashboard_queries(), **alert_queries()}.items():
        for name in metric_names(expression) - PROMETHEUS_SERIES:
            used.setdefault(name, []).append(where)
    return used


def declared_series() -> set[str]:
    """The series names the worker's own metrics (consumer.metrics) can expose."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("consumer_"):
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def arroyo_series() -> set[str]:
    """The series names the arroyo bridge can make from arroyo's metric names."""
    names: set[str] = set()
    for name in typing.get_args(MetricName):
        base = metrics._prom_name(name)
        if name in metrics._WINDOW_SUMS:
            names.add(f"{base}_seconds_total")
        else:
            names.update({f"{base}_total", base})
            names.update(f"{base}_seconds{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


# ----------------------------------------------------------------------------- tests


def test_metric_names_are_read_from_the_parsed_expression() -> None:
    expression = (
        'histogram_quantile(0.95, sum by (le, step) (rate(a_bucket{instance=~"$instance", '
        'step!="by"}[$__rate_interval]))) > 3 and on (job) deriv(sum(b)[15m:1m]) > 0 '
        "or -c offset 5m unless absent(d == 1)"
    )
    assert metric_names(expression) == {"a_bucket", "b", "c", "d"}
    with pytest.raises(ValueError, match="not valid PromQL"):
        metric_names("sum(rate(a[5m])")


@pytest.mark.parametrize("where", sorted({**dashboard_queries(), **alert_queries()}))
def test_every_expression_parses_and_reads_declared_metrics(where: str) -> None:
    expression = {**dashboard_queries(), **alert_queries()}[where]
    names = metric_names(expression)
    assert names, f"{where} reads no metric"
    unknown = names - declared_series() - arroyo_series() - PROMETHEUS_SERIES
    assert not unknown, f"{where} reads metrics the worker does not declare: {sorted(unknown)}"


def test_the_dashboard_shows_what_operators_asked_for() -> None:
    """Throughput, lag per partition, batch latency per step, cache hit ratio, dead letters by
    reason: each has a panel reading the metric that measures it, split the right way."""
    by_title = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in panels()}
    wanted = {
        "Throughput by outcome": ("consumer_messages_total", "by (outcome)"),
        "Lag per partition": ("consumer_lag", "by (topic, partition)"),
        "Batch latency per step (p95)": ("consumer_save_step_duration_seconds_bucket", "step"),
        "Cache hit ratio": ("consumer_cache_requests_total", 'result="hit"'),
        "Dead letters by reason": ("consumer_dead_letters_total", "by (reason)"),
    }
    for title, (metric, split) in wanted.items():
        assert title in by_title, f"no panel {title!r}"
        assert any(metric in e and split in e for e in by_title[title]), (title, by_title[title])


def test_dashboard_panels_use_the_provisioned_data_source_and_do_not_overlap() -> None:
    datasources = yaml.safe_load(
        (REPO / "config/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_alerts_cover_the_failures_operators_page_on() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    reads = {name: metric_names(rule["expr"]) for name, rule in rules.items()}
    assert "consumer_lag" in reads["ConsumerLagGrowing"]
    assert "consumer_last_commit_timestamp_seconds" in reads["ConsumerNotCommitting"]
    assert "consumer_dead_letters_total" in reads["ConsumerDeadLetterRate"]
    assert "consumer_save_failures_total" in reads["ConsumerSaveFailures"]
    assert {"up", "consumer_up"} <= reads["ConsumerDown"]
    job = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"][0]["job_name"]
    for name, rule in rules.items():
        assert f'job="{job}"' in rule["expr"], f"{name} does not select the scrape job {job}"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
