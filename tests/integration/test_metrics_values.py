"""A scrape of `/metrics` during a run shows every metric family of CONTRACT §7, with values that
match what the test sent: messages by outcome and reason, batches, per-step durations, cache
lookups per cache, rows per table, dead letters by reason, committed offset and lag per
partition, event age, and arroyo's own metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from consumer.loadgen.sdk import capture_events
from consumer.settings import Settings
from tests.integration.helpers import (
    end_offsets,
    free_port,
    make_project,
    metrics_text,
    produce_events,
    produce_raw,
    start_worker,
)

pytestmark = pytest.mark.integration

GOOD = 300


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    text = metrics_text(port)
    if text is None:
        return None
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def _names(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {name for name, _labels in samples}


def test_a_scrape_during_a_run_matches_what_was_sent(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 2)
    create_topic(settings.kafka.dlq_topic, 1)
    produce_events(producer, topic, capture_events(GOOD, seed=21), [project_id])
    bad = [b"{broken", b"[]", orjson.dumps({"id": 1, "project_id": project_id, "fingerprint": []})]
    produce_raw(producer, topic, bad)
    status_change = orjson.dumps(
        {
            "id": "a" * 32,
            "project_id": project_id,
            "fingerprint": ["f"],
            "payload_type": "status_change",
            "new_status": 1,
            "new_substatus": None,
        }
    )
    produce_raw(producer, topic, [status_change])
    port = free_port()
    worker = start_worker(
        settings,
        "--metrics-port",
        str(port),
        "--batch-size",
        "100",
        "--exit-when-idle",
        "6",
        topic=topic,
    )
    ends = end_offsets(settings, topic)
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            scraped = _samples(port)
            if scraped is not None:
                samples = scraped
                committed = {
                    dict(labels)["partition"]: value
                    for (name, labels), value in samples.items()
                    if name == "consumer_committed_offset"
                }
                if committed == {str(p): float(o) for p, o in ends.items()}:
                    break
            time.sleep(0.3)
    finally:
        worker.wait(timeout=60)
        output = worker.communicate()[0]
    assert worker.returncode == 0, output[-3000:]

    # Messages by outcome and reason.
    assert _value(samples, "consumer_messages_total", outcome="saved") == GOOD
    assert (
        _value(samples, "consumer_messages_total", outcome="skipped", reason="status_change") == 1
    )
    assert _value(samples, "consumer_messages_total", outcome="dead_lettered") == len(bad)
    assert (
        _value(samples, "consumer_messages_total", outcome="dead_lettered", reason="invalid_json")
        == 1
    )
    # Dead letters by reason add up to the bad messages.
    assert _value(samples, "consumer_dead_letters_total") == len(bad)
    # Batches: every message counted once, in batches of at most 100.
    assert _value(samples, "consumer_batch_size_sum") == GOOD + len(bad) + 1
    batches = _value(samples, "consumer_batch_size_count")
    assert batches >= (GOOD + len(bad) + 1) / 100
    assert _value(samples, "consumer_batch_duration_seconds_count") == batches
    # Per-step durations of save_generic_events, one observation per batch with events.
    for step in ("releases", "event_users", "plugin_tags", "interface_tags", "metadata",
                 "environments", "event_metrics", "nodestore"):  # fmt: skip
        assert _value(samples, "consumer_save_step_duration_seconds_count", step=step) >= 1, step
    # Rows: an event document and an occurrence document per saved event.
    assert _value(samples, "consumer_rows_written_total", table="nodestore_node") == 2 * GOOD
    assert _value(samples, "consumer_rows_written_total", table="sentry_environment") >= 1
    # Cache lookups per cache.
    for cache in ("model", "indexer", "environment_link"):
        assert _value(samples, "consumer_cache_requests_total", cache=cache) > 0, cache
    # Committed offset and lag per partition.
    for partition, offset in ends.items():
        assert _value(samples, "consumer_committed_offset", partition=str(partition)) == offset
        assert _value(samples, "consumer_lag", partition=str(partition)) == 0
    # Event age at save: one observation per saved event, all recent.
    assert _value(samples, "consumer_event_age_seconds_count") == GOOD
    assert _value(samples, "consumer_event_age_seconds_bucket", le="300.0") == GOOD
    # arroyo's own metrics, bridged.
    names = _names(samples)
    assert "arroyo_consumer_poll_time_seconds_total" in names
    assert any(name.startswith("arroyo_consumer_run_callback") for name in names)
    assert _value(samples, "consumer_up") == 1
