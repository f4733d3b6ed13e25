"""The operators' document cannot drift from the code: the configuration reference of
docs/operations.md lists every setting of consumer/settings.py with its environment variable,
flag and default; its metrics reference lists every metric of consumer/metrics.py with its
labels. And the README stays a front door: the two commands first, at most 10 KB.

When a setting or a metric changes, the failure message prints the rows to paste."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from consumer import cli, metrics
from consumer.settings import SECTIONS, Secret, env_name

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
README_MAX_BYTES = 10 * 1024


def _section(title: str) -> str:
    text = OPERATIONS.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _table(section: str) -> list[list[str]]:
    """The rows of the first Markdown table in `section`, cells stripped of backticks."""
    rows: list[list[str]] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        if not set(line) <= set("|-: "):
            rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Secret):
        return str(value)
    if isinstance(value, dict):
        return "{}"
    if value == "":
        return '""'
    return str(value)


def _run_flags() -> dict[str, str]:
    """setting -> the `consumer run` flag that overrides it."""
    run = next(
        action
        for action in cli.build_parser()._subparsers._group_actions  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction)
    ).choices["run"]
    flags = {a.dest: a.option_strings[0] for a in run._actions if a.option_strings}
    namespace = argparse.Namespace(**{dest: f"<{dest}>" for dest in flags})
    found = {}
    for section, values in cli.run.run_overrides(namespace).items():
        for name, value in values.items():
            found[f"{section}.{name}"] = flags[value.strip("<>")]
    return found


def expected_settings() -> list[list[str]]:
    flags = _run_flags()
    rows = []
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            setting = f"{section}.{f.name}"
            rows.append(
                [
                    setting,
                    env_name(section, f.name),
                    flags.get(setting, ""),
                    _default(getattr(defaults, f.name)),
                ]
            )
    return rows


def _paste(rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(f"`{c}`" if c else "" for c in row) + " |" for row in rows)


def test_the_configuration_reference_lists_every_setting() -> None:
    table = _table(_section("Configuration reference"))
    assert [row[:4] for row in table] == expected_settings(), (
        "docs/operations.md configuration reference is out of date; its first four columns should be:\n"
        + _paste(expected_settings())
    )
    for row in table:
        assert len(row) == 5 and len(row[4]) > 10, f"{row[0]} has no description"


def test_the_metrics_reference_lists_every_metric_with_its_labels() -> None:
    expected = []
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            suffix = "_total" if metric._type == "counter" else ""
            expected.append([metric._name + suffix, metric._type, ", ".join(metric._labelnames)])
    assert len(expected) >= 15
    table = _table(_section("Metrics reference"))
    listed = [row[:3] for row in table if row[0].startswith("consumer_")]
    assert sorted(listed) == sorted(expected), (
        "docs/operations.md metrics reference is out of date; its consumer_* rows should start with:\n"
        + _paste(sorted(expected))
    )
    for row in table:
        assert row[3], f"{row[0]} has no description"


def test_the_readme_still_starts_with_the_two_commands() -> None:
    head = README.read_text().split("\n## ", 1)[0]
    commands = re.findall(r"^make \w+", head, flags=re.MULTILINE)
    assert commands == ["make demo", "make test"]


def test_the_readme_is_at_most_10_kb() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size:,} bytes; at most {README_MAX_BYTES:,}: move reference material "
        "to docs/"
    )
