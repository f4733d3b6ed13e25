"""`consumer bench` at a small size against the real services: every measurement reads what it
should, with every process of the baselines doing a share of the work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.bench.worker import BenchOptions, run_bench
from consumer.settings import Settings

pytestmark = pytest.mark.integration


def test_every_measurement_reads_its_messages_in_every_process(
    settings: Settings, tmp_path: Path
) -> None:
    output = tmp_path / "bench.json"
    options = BenchOptions(
        events=400, partitions=2, processes=2, runs=1, per_event_events=60, output=output
    )
    said: list[str] = []
    summary = run_bench(settings, options, say=said.append)

    medians = summary["medians"]
    for kind, expected in (("worker", 400), ("limit", 400), ("per_event", 60)):
        (run,) = medians[kind]["runs"]
        assert run["events"] == expected, (kind, run)
        assert run["exit_codes"] == [0, 0], (kind, run)
        assert run["events_per_second"] > 0 and len(run["max_rss_mb"]) == 2, (kind, run)
    for kind in ("limit", "per_event"):
        # Each baseline process reads its own partition: neither measures the other's idling.
        assert all(count > 0 for count in medians[kind]["runs"][0]["events_per_process"]), kind
    assert set(summary["ratios"]) == {"worker/limit", "worker/per_event"}
    assert json.loads(output.read_text())["ratios"] == summary["ratios"]
    assert "\nworker/limit: " in "\n".join(said)
