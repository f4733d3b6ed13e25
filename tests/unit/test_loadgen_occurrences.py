"""Wrapping events as occurrences, and the mix of bad messages `consumer produce --bad-ratio`
sends: each kind really is bad for the worker's decoder, and the share is the one asked for."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sentry_kafka_schemas import get_codec

from consumer.errors import BadMessage
from consumer.loadgen.occurrences import (
    BAD_KINDS,
    GOOD,
    RAW_FILE,
    UNKNOWN_PROJECT_BASE,
    Message,
    Sample,
    bad_message,
    build_occurrence,
    is_bad,
    messages,
    wrap_event,
)
from consumer.pipeline.job import Job
from consumer.pipeline.message import decode

EVENT: dict[str, Any] = {
    "event_id": "0" * 32,
    "timestamp": "2016-03-01T10:00:00Z",
    "release": "backend@1.0",
    "exception": {"values": [{"type": "KeyError", "value": "'sku-9'"}]},
}
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def _events() -> Any:
    while True:
        yield dict(EVENT)


def test_wrapping_gives_fresh_ids_and_timestamps_and_leaves_the_event_alone() -> None:
    rng = random.Random(1)
    original = orjson.dumps(EVENT)
    first = build_occurrence(EVENT, 42, rng, NOW)
    second = build_occurrence(EVENT, 42, rng, NOW)
    assert orjson.dumps(EVENT) == original
    assert first["event_id"] != second["event_id"] and first["id"] != second["id"]
    assert first["event_id"] != EVENT["event_id"]
    event = first["event"]
    assert event["event_id"] == first["event_id"]
    assert event["project_id"] == first["project_id"] == 42
    assert event["timestamp"] == event["received"] == NOW.isoformat()
    assert first["detection_time"] == NOW.timestamp()
    assert event["release"] == "backend@1.0"
    assert first["issue_title"] == "KeyError: 'sku-9'"
    key, value = wrap_event(EVENT, 42, random.Random(1), NOW)
    assert orjson.loads(value) == first
    assert key == first["fingerprint"][0].encode()


def test_a_transaction_keeps_its_duration() -> None:
    transaction = {
        "type": "transaction",
        "start_timestamp": 1_600_000_000.0,
        "timestamp": "2020-09-13T12:26:42.5Z",  # 2.5 s after the start
    }
    event = build_occurrence(transaction, 1, random.Random(0), NOW)["event"]
    assert event["start_timestamp"] == pytest.approx(NOW.timestamp() - 2.5)
    assert datetime.fromisoformat(event["timestamp"]) - timedelta(seconds=2.5) == (
        datetime.fromtimestamp(event["start_timestamp"], UTC)
    )


def test_a_wrapped_event_is_a_valid_occurrence_the_worker_saves() -> None:
    occurrence = build_occurrence(EVENT, 7, random.Random(2), NOW)
    get_codec("ingest-occurrences").validate(occurrence)
    job = decode(orjson.dumps(occurrence))
    assert isinstance(job, Job)
    assert (job.project_id, job.event_id) == (7, occurrence["event_id"])


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_every_kind_of_bad_message_is_bad(kind: str) -> None:
    for seed in range(20):
        rng = random.Random(seed)
        value = bad_message(kind, build_occurrence(EVENT, 7, rng, NOW), rng)
        if kind == "unknown_project":
            # Well-formed: only the save step can tell that the project does not exist.
            job = decode(value)
            assert isinstance(job, Job)
            assert job.project_id >= UNKNOWN_PROJECT_BASE
        else:
            with pytest.raises(BadMessage):
                decode(value)


def test_a_share_of_bad_messages_of_every_kind() -> None:
    produced = list(islice(messages(_events(), [1, 2, 3], random.Random(3), bad_ratio=0.05), 4000))
    kinds = Counter(message.kind for message in produced)
    assert kinds[GOOD] == 3800
    assert set(kinds) == {GOOD, *BAD_KINDS}
    for message in produced:
        if message.kind == GOOD:
            job = decode(message.value)
            assert isinstance(job, Job)
            assert (job.project_id, job.event_id) == (message.project_id, message.event_id)
            assert message.key is not None


def test_only_the_chosen_kinds_and_no_bad_ones_by_default() -> None:
    chosen = list(
        islice(
            messages(_events(), [1], random.Random(4), bad_ratio=0.5, bad_kinds=["wrong_type"]),
            100,
        )
    )
    assert Counter(m.kind for m in chosen) == {GOOD: 50, "wrong_type": 50}
    clean = list(islice(messages(_events(), [1], random.Random(4)), 100))
    assert {m.kind for m in clean} == {GOOD}


@given(
    n=st.integers(0, 5000), ratio=st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 1 / 3, 1.0])
)
def test_exactly_the_share_asked_for_over_any_prefix(n: int, ratio: float) -> None:
    assert sum(is_bad(i, ratio) for i in range(n)) == int(n * ratio + 1e-9)


def test_traffic_is_spread_over_all_projects_the_first_ones_busiest() -> None:
    produced = islice(messages(_events(), [10, 20, 30, 40], random.Random(5)), 5000)
    per_project = Counter(message.project_id for message in produced)
    assert set(per_project) == {10, 20, 30, 40}
    assert per_project[10] > per_project[20] > per_project[30] > per_project[40]


def test_raw_samples_are_sent_as_they_are() -> None:
    samples: list[Sample] = [b"{not json", dict(EVENT), b"[1, 2]"]
    produced = list(messages(iter(samples), [1], random.Random(6)))
    assert [m.kind for m in produced] == [RAW_FILE, GOOD, RAW_FILE]
    assert produced[0] == Message(None, b"{not json", RAW_FILE)
    assert produced[2].value == b"[1, 2]"


@pytest.mark.parametrize(
    ("projects", "ratio", "kinds", "error"),
    [
        ([], 0.0, None, "project id"),
        ([1], 1.5, None, "bad_ratio"),
        ([1], 0.1, ["no_such_kind"], "no_such_kind"),
    ],
)
def test_impossible_requests_are_refused(
    projects: list[int], ratio: float, kinds: list[str] | None, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        next(messages(_events(), projects, random.Random(0), bad_ratio=ratio, bad_kinds=kinds))
