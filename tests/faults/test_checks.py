"""The suite's own checks, on made-up data (no services): they must be able to fail."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.faults.expect import FieldOracle, content_mismatches, expected_rows
from tests.faults.sampler import Sample
from tests.faults.scenario import recovery_times
from tests.faults.traffic import Occurrences, Sent, good, mix
from tests.faults.verdict import audit_commits, commits_moved_back
from tests.unit.pipeline.samples import expected_document


def _record(offset: int, outcome: str = "saved", partition: int = 0) -> Sent:
    record = Sent(kind="good", outcome=outcome, key=None, value=b"{}")  # type: ignore[arg-type]
    record.partition, record.offset = partition, offset
    return record


def test_a_commit_past_unsaved_work_is_caught() -> None:
    records = [_record(0), _record(1), _record(2, "skipped"), _record(3)]
    done = {(0, 0): 10.0, (0, 1): 12.0, (0, 3): 20.0}
    # Offset 2 committed at 11: message 1 was written only at 12.
    violations = audit_commits(records, done, [Sample(11.0, {0: 2})])
    assert len(violations) == 1
    assert "at 1 was done at 12.000" in violations[0]


def test_commits_behind_the_writes_pass_and_skipped_messages_need_nothing() -> None:
    records = [_record(0), _record(1), _record(2, "skipped"), _record(3)]
    done = {(0, 0): 10.0, (0, 1): 12.0, (0, 3): 20.0}
    samples = [Sample(12.5, {0: 2}), Sample(13.0, {0: 3}), Sample(21.0, {0: 4})]
    assert audit_commits(records, done, samples) == []


def test_a_commit_past_a_message_never_done_is_caught() -> None:
    records = [_record(0), _record(1)]
    violations = audit_commits(records, {(0, 1): 5.0}, [Sample(30.0, {0: 2})])
    assert violations and "at 0 was never done" in violations[0]


def test_a_committed_offset_that_moves_back_is_reported() -> None:
    samples = [Sample(1.0, {0: 5, 1: 7}), Sample(2.0, {0: 9, 1: 7}), Sample(3.0, {0: 6, 1: 8})]
    assert commits_moved_back(samples) == ["partition 0 9 -> 6 at 3.000"]
    assert commits_moved_back(samples[:2]) == []


def test_recovery_is_the_time_until_every_moving_partition_commits_again() -> None:
    samples = [
        Sample(1.0, {0: 10, 1: 10}),
        Sample(3.0, {0: 10, 1: 10}),
        Sample(4.0, {0: 12, 1: 10}),
        Sample(6.5, {0: 12, 1: 15}),
    ]
    assert recovery_times([2.0], samples) == [4.5]


@pytest.fixture(scope="module")
def oracle() -> FieldOracle:
    return FieldOracle()


def _occurrence(**event: Any) -> dict[str, Any]:
    occurrence = Occurrences([7], seed=3).next()
    for key in ("release", "dist", "environment", "request", "user", "server_name"):
        occurrence["event"].pop(key, None)
    occurrence["event"].update(event)
    return occurrence


def test_rows_follow_the_contract(oracle: FieldOracle) -> None:
    saved = [
        good(_occurrence(release="web@1", dist="2", environment="prod")),
        good(_occurrence(release="latest", dist="3")),  # invalid: no release, no dist
        good(_occurrence(release=42)),  # Relay reads a number as its text
        good(_occurrence(release="web@1", dist="has space")),  # Relay drops the dist
    ]
    rows = expected_rows(saved, {7: 70}, oracle)
    assert rows.releases == {(70, "web@1"), (70, "42")}
    assert rows.release_projects == {(7, "web@1"), (7, "42")}
    assert rows.distributions == {(70, "web@1", "2")}
    assert rows.environments == {(70, "prod"), (70, "")}
    assert rows.environment_projects == {(7, "prod"), (7, "")}


def test_a_stored_event_with_the_wrong_release_is_caught(oracle: FieldOracle) -> None:
    record = good(_occurrence(release="  web@1  ", environment="prod"))
    message = record.message()
    document = {
        "event_id": record.event_id,
        "type": "generic",
        "project": 7,
        "platform": message["event"]["platform"],
        "level": message["level"],
        "release": "  web@1  ",  # not trimmed as Relay trims it
        "environment": "prod",
        "metadata": {"title": message["issue_title"]},
        "tags": [["sentry:release", "web@1"], ["environment", "prod"]],
    }
    occurrence = expected_document(message)  # what Sentry's IssueOccurrence.to_dict writes
    problems = content_mismatches(record, document, occurrence, oracle)
    assert [p.split(":")[0] for p in problems] == ["release"]
    assert content_mismatches(record, {**document, "release": "web@1"}, occurrence, oracle) == []


def test_mix_keeps_every_record_once_and_in_order() -> None:
    goods = [_record(i) for i in range(20)]
    others = [_record(100 + i) for i in range(5)]
    mixed = mix(goods, others, random.Random(1))
    assert sorted(map(id, mixed)) == sorted(map(id, goods + others))
    assert [r for r in mixed if r in goods] == goods
    assert [r for r in mixed if r in others] == others
