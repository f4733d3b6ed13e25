"""The grouping rules as data (consumer/pipeline/groups.py), each table citing the reference
(sentry-issue-platform.md) and Sentry's source at the reference's commit."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from consumer.pipeline.groups import (
    DEFAULT_PRIORITY,
    fold,
    group_data,
    group_message,
    hash_fingerprint,
    is_regression,
    level_number,
    merge_data,
    score,
    search_message,
    truncate,
    updated_title,
)
from consumer.pipeline.issues import issue_occurrence, save_issue_occurrences
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.storage.models import GroupRow, GroupValues, IssueOccurrence
from tests.unit.pipeline.builders import PROJECT_ID, event, job

T0 = datetime(2024, 5, 20, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (["a"], (hashlib.md5(b"a").hexdigest(),)),
        (["a", "a"], (hashlib.md5(b"a").hexdigest(),) * 2),  # duplicates kept
        (["b", "a"], (hashlib.md5(b"b").hexdigest(), hashlib.md5(b"a").hexdigest())),  # order kept
        (["é"], (hashlib.md5("é".encode()).hexdigest(),)),  # UTF-8
        ([], ()),  # an empty list stays empty
    ],
)
def test_fingerprints_hash_as_sentry_does(parts: list[str], expected: tuple[str, ...]) -> None:
    """§1.1 `process_occurrence_data` (issues/ingest.py:71-76): lowercase hex MD5 per part."""
    assert hash_fingerprint(parts) == expected
    assert all(len(h) == 32 and h == h.lower() for h in expected)


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("sample", 0),
        ("debug", 10),
        ("info", 20),
        ("warning", 30),
        ("error", 40),
        ("fatal", 50),
        (None, 20),  # falsy: DEFAULT_LEVEL "info" (issue_occurrence.py:130-132)
        ("", 20),
        ("warn", None),  # unmapped: Sentry fails the insert (P3); we reject the job
        ("critical", None),
    ],
)
def test_levels_map_as_log_levels_map(level: str | None, expected: int | None) -> None:
    """§1.4.1 `LOG_LEVELS_MAP.get(occurrence.level)` (constants.py:219-229)."""
    assert level_number(level) == expected


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        ("a" * 200, 200, "a" * 200),
        ("a" * 201, 200, "a" * 197 + "..."),  # newer Sentry's culprit (P4)
        ("short", 255, "short"),
    ],
)
def test_truncate_as_truncatechars(value: str, length: int, expected: str) -> None:
    """§8 P4; utils/strings.py:53-68."""
    assert truncate(value, length) == expected


@pytest.mark.parametrize(
    ("metadata", "event_culprit", "title", "subtitle", "culprit", "expected"),
    [
        ({"title": "T"}, None, "T", "S", "C", "T S C"),  # title already in: not repeated
        ({"title": "T", "n": 3, "b": True}, "ev.culprit", "T", "", "", "T ev.culprit"),
        # an empty base message: the augment starts with a space (reference §3.2)
        ({"in_app_frame_mix": "mixed"}, None, "T", "S", "", " T S"),
        ({}, None, "", "", "", ""),
        ({"title": "  padded  "}, None, "X", "", "", "padded X"),  # stripped before augment
    ],
)
def test_search_message(
    metadata: dict[str, Any],
    event_culprit: str | None,
    title: str,
    subtitle: str,
    culprit: str,
    expected: str,
) -> None:
    """§1.4.2 `search_message` (eventstore/models.py:559-591) and
    `augment_message_with_occurrence`."""
    assert search_message(metadata, event_culprit, title, subtitle, culprit) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("  one\ntwo  ", "one"),
        ("x" * 300, "x" * 252 + "..."),
        ("", ""),
    ],
)
def test_group_message_is_the_first_line_cut_to_255(message: str, expected: str) -> None:
    """§1.4.2: `Group.save` (models/group.py:604-620)."""
    assert group_message(message) == expected


def test_group_data_is_the_issue_platform_materialize_metadata() -> None:
    """§1.4.1 `materialize_metadata` (issues/ingest.py:128-158) plus `last_received`."""
    data = group_data({"title": "ignored", "extra": 1}, "Title", "Sub", "cul", 75, T0)
    assert data == {
        "type": "generic",
        "title": "Title",
        "culprit": "cul",
        "metadata": {"title": "Title", "extra": 1, "value": "Sub", "initial_priority": 75},
        "location": None,
        "last_received": "2024-05-20T10:00:00.000000Z",
    }
    assert list(data) == ["type", "title", "culprit", "metadata", "location", "last_received"]


@pytest.mark.parametrize(
    ("existing", "incoming", "expected"),
    [
        ("Old", "New", "New"),  # a real incoming title wins
        ("Old", "<unlabeled event>", "Old"),  # a placeholder never replaces a real one
        ("<untitled>", "Error", "Error"),  # both placeholders: incoming
        (None, "", ""),
        ("Old", None, "Old"),
    ],
)
def test_updated_title(existing: Any, incoming: Any, expected: Any) -> None:
    """§1.4.8 `_get_updated_group_title` (event_manager.py:2193-2224)."""
    assert updated_title(existing, incoming) == expected


def test_merge_data_keeps_existing_keys_and_chooses_titles_separately() -> None:
    """§1.4.8 `_process_existing_aggregate` data merge (event_manager.py:2227-2283)."""
    existing = {"title": "Real", "sdk": {"name": "x"}, "metadata": {"title": "Real", "a": 1}}
    incoming = {"title": "<unknown>", "metadata": {"title": "New", "b": 2}, "culprit": "c"}
    assert merge_data(existing, incoming) == {
        "title": "Real",
        "sdk": {"name": "x"},
        "culprit": "c",
        "metadata": {"title": "New", "a": 1, "b": 2},
    }


@pytest.mark.parametrize(
    ("status", "active_at", "date", "expected"),
    [
        (1, None, T0, True),  # resolved, never active: NULL passes the exclude
        (1, T0 - timedelta(seconds=6), T0, True),
        (1, T0 - timedelta(seconds=5), T0, False),  # active within 5 s: no regression
        (1, T0, T0, False),
        (0, None, T0, False),  # unresolved
        (2, None, T0, False),  # ignored
    ],
)
def test_regression_rule(
    status: int, active_at: datetime | None, date: datetime, expected: bool
) -> None:
    """§1.4.8 `_handle_regression` (event_manager.py:2043-2182): resolved groups only, and
    the conditional update `NOT (active_at >= date - 5 s)`."""
    assert is_regression(status, active_at, date) is expected


def _values(message: str = "m", level: int = 40, culprit: str = "c") -> GroupValues:
    return GroupValues(level, message, culprit, "python", 1001, 50, {"title": message})


def _occurrence(seconds: int, values: GroupValues | None = None) -> IssueOccurrence:
    return IssueOccurrence(
        PROJECT_ID,
        1,
        f"o{seconds}",
        f"e{seconds}",
        ("h",),
        T0 + timedelta(seconds=seconds),
        values or _values(),
        None,
        None,
        None,
        "",
    )


ROW = GroupRow(1, PROJECT_ID, 0, 3, 40, "m", "c", T0, T0 + timedelta(hours=1), T0, 4, {})


@pytest.mark.parametrize(
    ("row", "seconds", "expected"),
    [
        # (status, substatus, first_seen offset s, last_seen offset s, times_seen, regressed)
        (ROW, [10], (0, 3, 0, 3600, 5, False)),  # last_seen never moves back
        (ROW, [7200, 100], (0, 3, 0, 7200, 6, False)),
        (ROW, [-60], (0, 3, -60, 3600, 5, False)),  # first_seen only moves earlier
        (replace(ROW, status=1, substatus=None), [7200], (0, 6, 0, 7200, 5, True)),
        (replace(ROW, status=1, substatus=None, active_at=None), [0], (0, 6, 0, 3600, 5, True)),
        (
            replace(ROW, status=1, substatus=None, active_at=T0 + timedelta(hours=1)),
            [1],
            (1, None, 0, 3600, 5, False),
        ),
        (replace(ROW, status=2, substatus=5), [7200], (2, 5, 0, 7200, 5, False)),
        (ROW, [], (0, 3, 0, 3600, 4, False)),
    ],
)
def test_fold(row: GroupRow, seconds: list[int], expected: tuple[Any, ...]) -> None:
    """§1.4.8 `_process_existing_aggregate` and `_handle_regression`: last_seen the max,
    first_seen the min, times_seen + 1 per counted occurrence, a resolved group regressed
    (status 0, substatus 6, active_at and last_seen the regression date)."""
    change = fold(row, [_occurrence(s) for s in seconds])
    status, substatus, first, last, times_seen, regressed = expected
    assert (change.status, change.substatus) == (status, substatus)
    assert change.first_seen == T0 + timedelta(seconds=first)
    assert change.last_seen == T0 + timedelta(seconds=last)
    assert change.times_seen == times_seen
    assert (change.regression is not None) is regressed
    if regressed:
        assert change.active_at == change.last_seen
    assert change.score == score(times_seen, change.last_seen)


def test_fold_is_last_writer_wins_for_level_culprit_and_message() -> None:
    """§1.4.8: the extra columns are last-writer-wins; a placeholder message is not taken."""
    change = fold(
        ROW,
        [
            _occurrence(1, _values("first", 30, "c1")),
            _occurrence(2, _values("<unlabeled event>", 50, "c2")),
        ],
    )
    assert (change.message, change.level, change.culprit) == ("first", 50, "c2")


def test_score_is_ln_times_seen_by_600_plus_epoch() -> None:
    """models/group.py:917-919 (P10: natural log, UTC epoch)."""
    assert score(1, T0) == int(T0.timestamp())
    assert score(10, T0) == int(2.302585092994046 * 600 + T0.timestamp())


def _job_with(document: dict[str, Any], **event_fields: Any) -> Any:
    made = job(event(timestamp=T0.timestamp(), tags=[], **event_fields))
    made.occurrence_json = orjson.dumps(document)
    return made


@pytest.mark.parametrize(
    ("document", "outcome"),
    [
        ({"fingerprint": list(hash_fingerprint(["a", "b"])), "type": 1001, "level": "error"}, None),
        ({"fingerprint": [], "type": 1001}, "empty_fingerprint"),
        ({"type": 1001}, "empty_fingerprint"),
        ({"fingerprint": ["0" * 32], "type": 1001, "level": "warn"}, None),  # Relay's level
    ],
)
def test_issue_occurrence_from_a_job(
    document: dict[str, Any], outcome: str | None, storage: MemoryStorage
) -> None:
    made = _job_with(document, level="warning")
    project = storage.projects_by_id[PROJECT_ID]
    built = issue_occurrence(made, project)
    if outcome is None:
        assert built is not None and made.outcome is None
        assert built.hashes == tuple(document["fingerprint"])  # hashed by the decoder
        assert built.values.priority == DEFAULT_PRIORITY  # no initial_issue_priority
    else:
        assert built is None and made.outcome is not None
        assert made.outcome.reason == outcome


def test_an_unmapped_level_is_rejected_when_the_event_level_does_not_repair_it(
    storage: MemoryStorage,
) -> None:
    made = _job_with({"fingerprint": ["a"], "type": 1001, "level": "critical"})
    made.level = "critical"
    assert issue_occurrence(made, storage.projects_by_id[PROJECT_ID]) is None
    assert made.outcome is not None and made.outcome.reason == "invalid_level"


def test_priority_comes_from_the_occurrence(storage: MemoryStorage) -> None:
    made = _job_with({"fingerprint": ["a"], "type": 1001, "initial_issue_priority": 75})
    built = issue_occurrence(made, storage.projects_by_id[PROJECT_ID])
    assert built is not None and built.values.priority == 75
    assert built.values.data["metadata"]["initial_priority"] == 75


def test_saving_twice_counts_once_and_finds_groups_by_any_hash(storage: MemoryStorage) -> None:
    """CONTRACT §9.7 and the newer multi-hash rule (reference §7, PR #87311)."""
    a, b = hash_fingerprint(["a", "b"])
    first = _job_with({"fingerprint": [a], "type": 1001})
    second = _job_with({"fingerprint": [b, a], "type": 1001})  # "a" links it to the group
    projects = storage.projects_by_id
    save_issue_occurrences([first, second], projects, storage)
    save_issue_occurrences([first, second], projects, storage)  # a replay
    assert first.group is not None and second.group is not None
    assert first.group.group_id == second.group.group_id
    assert not first.group.counted and not second.group.counted  # the replay's infos
    (group,) = storage.groups.values()
    assert group.times_seen == 2
    assert storage.short_ids[group.id] == 1


@pytest.mark.parametrize("priority", [2**63 - 1, 2**31, -(2**31) - 1, "high", 7.5])
def test_a_priority_no_group_can_hold_is_rejected(storage: MemoryStorage, priority: Any) -> None:
    """Sentry's insert of such a group fails and loses the message; here a dead letter."""
    made = _job_with({"fingerprint": ["a"], "type": 1001, "initial_issue_priority": priority})
    assert issue_occurrence(made, storage.projects_by_id[PROJECT_ID]) is None
    assert made.outcome is not None and made.outcome.reason == "invalid_field"
