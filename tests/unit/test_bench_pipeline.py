"""The CPU benchmark runs and accounts for every part (its figures are read by people, not
asserted: timings are never asserted in tests)."""

from __future__ import annotations

from consumer.bench.pipeline import (
    BASELINE_PARTS,
    BATCH_ORDER,
    PARTS,
    PER_MESSAGE_ORDER,
    measure,
    sdk_mix,
)


def test_bench_reports_every_part() -> None:
    (report,) = measure(sdk_mix(20), runs=1, batch=10)
    assert report.events == 20
    assert set(report.micros) >= {*PARTS, *BASELINE_PARTS}
    assert report.micros["normalize"] > 0 and report.micros[BASELINE_PARTS[0]] > 0
    assert report.total > report.pipeline > 0
    assert "total / baseline" in report.table()


def test_bench_compares_both_orders_of_the_decode_parts() -> None:
    reports = measure(sdk_mix(20), runs=2, batch=10, orders=(PER_MESSAGE_ORDER, BATCH_ORDER))
    assert [report.mix for report in reports] == [
        f"sentry-sdk events, {PER_MESSAGE_ORDER}",
        f"sentry-sdk events, {BATCH_ORDER}",
    ]
    for report in reports:
        assert len(report.pipeline_runs) == 2 and report.pipeline > 0
        assert report.micros["normalize"] > 0 and report.micros["build event"] > 0
