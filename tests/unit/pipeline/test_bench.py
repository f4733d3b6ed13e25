"""The CPU benchmark runs and accounts for every part (its figures are read by people, not
asserted: timings are never asserted in tests)."""

from __future__ import annotations

from consumer.pipeline.bench import BASELINE_PARTS, PARTS, measure, sdk_mix


def test_bench_reports_every_part() -> None:
    report = measure(sdk_mix(20), runs=1, batch=10)
    assert report.events == 20
    assert set(report.micros) >= {*PARTS, *BASELINE_PARTS}
    assert report.micros["normalize"] > 0 and report.micros[BASELINE_PARTS[0]] > 0
    assert report.total > report.pipeline > 0
    assert "total / baseline" in report.table()
