"""Sentry's intake rules, one table per rule: what Sentry's occurrence consumer saves is saved,
what it refuses or drops is a dead letter whose reason names the rule (CONTRACT §2, §6).

Each message goes through the decoder and the save step against the in-memory storage, as the
worker runs them. Line numbers are of `src/sentry/...` at `7698ea90003c` (reference
`sentry-behaviour.md` §7.2); the rules are unchanged at `4b980c7c015f`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.errors import BadMessage
from consumer.pipeline.job import Job
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.message import MessageDecoder, Skip
from consumer.pipeline.save import OccurrencePipeline
from consumer.storage.nodestore import event_node_id, occurrence_node_id
from tests.unit.pipeline.builders import ORG_ID, encode, event, occurrence

SAVED = "saved"


@dataclass(frozen=True)
class Outcome:
    """`saved` (both nodes written), a skip or dead-letter reason, and what was stored."""

    result: str
    event: dict[str, Any] | None = None
    document: dict[str, Any] | None = None


def run(decoder: MessageDecoder, storage: MemoryStorage, message: dict[str, Any]) -> Outcome:
    refused: BadMessage | None = None
    try:
        decoded = decoder(encode(message))
    except BadMessage as bad:
        refused = bad
    if refused is not None:
        assert refused.detail, "a dead letter needs a detail"
        return Outcome(refused.reason)
    if isinstance(decoded, Skip):
        return Outcome(decoded.reason)
    assert isinstance(decoded, Job)
    OccurrencePipeline(storage).save([decoded])
    if decoded.outcome is not None:
        return Outcome(decoded.outcome.reason)
    rows = storage.nodestore.rows
    event_node = event_node_id(decoded.project_id, decoded.event_id)
    document = storage.nodestore.document(
        occurrence_node_id(decoded.occurrence_id, decoded.project_id)
    )
    stored_event = storage.nodestore.document(event_node) if event_node in rows else None
    return Outcome(SAVED if stored_event else "document_only", stored_event, document)


def _without(message: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in keys}


def _check(
    decoder: MessageDecoder, storage: MemoryStorage, message: dict[str, Any], expected: str
) -> Outcome:
    outcome = run(decoder, storage, message)
    assert outcome.result == expected
    return outcome


# ----------------------------------------------------------------------------- payload_type

PAYLOAD_TYPES = [
    ("absent", None, SAVED),
    ("occurrence", "occurrence", SAVED),
    ("null", "null", "unknown_payload_type"),
    ("empty", "", "unknown_payload_type"),
    ("status change", "status_change", "status_change"),
    ("other", "feedback", "unknown_payload_type"),
]


@pytest.mark.parametrize(
    ("case", "value", "expected"), PAYLOAD_TYPES, ids=[c[0] for c in PAYLOAD_TYPES]
)
def test_payload_type(
    decoder: MessageDecoder, storage: MemoryStorage, case: str, value: Any, expected: str
) -> None:
    """`issues/occurrence_consumer.py:346`: `message.get("payload_type", "occurrence")`, so only
    an absent key defaults; `:355-360` drops every value but the two known ones."""
    message = occurrence()
    message = _without(message, "payload_type") if case == "absent" else message
    if case != "absent":
        message["payload_type"] = None if value == "null" else value
    _check(decoder, storage, message, expected)


# ----------------------------------------------------------------------------- titles

TITLES = [
    ("title null", {"issue_title": None}, SAVED),
    ("subtitle null", {"subtitle": None}, SAVED),
    ("title absent", {"issue_title": ...}, "missing_field"),
    ("subtitle absent", {"subtitle": ...}, "missing_field"),
]


@pytest.mark.parametrize(("case", "change", "expected"), TITLES, ids=[c[0] for c in TITLES])
def test_issue_title_and_subtitle(
    decoder: MessageDecoder,
    storage: MemoryStorage,
    case: str,
    change: dict[str, Any],
    expected: str,
) -> None:
    """`issues/occurrence_consumer.py:167-168` reads both with `[]` (KeyError when absent) and
    checks no type: a null passes into the document, and a null title makes the event's title
    `<untitled>` (`eventtypes/base.py`, reference §2.6)."""
    message = occurrence()
    for key, value in change.items():
        if value is ...:
            del message[key]
        else:
            message[key] = value
    outcome = _check(decoder, storage, message, expected)
    if expected == SAVED and "issue_title" in change:
        assert outcome.document is not None and outcome.event is not None
        assert outcome.document["issue_title"] is None
        assert outcome.event["title"] == "<untitled>"


# ----------------------------------------------------------------------------- detection_time

MAY_1 = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
DETECTION_TIMES = [
    ("float", 1714564800.25, 1714564800.25),
    ("integer", 1714564800, 1714564800.0),
    ("ISO string", "2024-05-01T12:00:00", MAY_1),
    ("ISO string with Z and fraction", "2024-05-01T12:00:00.5Z", MAY_1 + 0.5),
    ("boolean (an int to Python)", True, 1.0),
    ("a date only", "2024-05-01", "invalid_field"),
    ("an offset", "2024-05-01T12:00:00+00:00", "invalid_field"),
    ("words", "yesterday", "invalid_field"),
    ("null", None, "invalid_field"),
]


@pytest.mark.parametrize(
    ("case", "value", "expected"), DETECTION_TIMES, ids=[c[0] for c in DETECTION_TIMES]
)
def test_detection_time(
    decoder: MessageDecoder, storage: MemoryStorage, case: str, value: Any, expected: Any
) -> None:
    """`issues/issue_occurrence.py:163` parses it with `utils/dates.py:79-97`
    (`parse_timestamp`): a number is UTC epoch seconds, a string `%Y-%m-%dT%H:%M:%S` with an
    optional fraction and `Z`; anything else gives None, which `__post_init__` (`:100-102`)
    fails on. `to_dict` (`:118`) stores the float epoch."""
    outcome = _check(
        decoder,
        storage,
        occurrence(detection_time=value),
        SAVED if isinstance(expected, float) else expected,
    )
    if isinstance(expected, float):
        assert outcome.document is not None
        assert outcome.document["detection_time"] == expected


# ----------------------------------------------------------------------------- group types

GROUP_TYPES = [
    ("released, default priority", {"type": 1001}, None, (SAVED, 25)),
    ("cron, high default priority", {"type": 4001}, None, (SAVED, 75)),
    ("priority given", {"type": 1001, "initial_issue_priority": 75}, None, (SAVED, 75)),
    ("not registered", {"type": 1002}, None, ("unknown_group_type", None)),
    ("null", {"type": None}, None, ("unknown_group_type", None)),
    ("unreleased, no feature", {"type": 7001}, None, ("group_type_not_enabled", None)),
    (
        "unreleased, feature off",
        {"type": 7001},
        {"organizations:uptime-domain-failure-ingest": False},
        ("group_type_not_enabled", None),
    ),
    (
        "unreleased, feature on",
        {"type": 7001},
        {"organizations:uptime-domain-failure-ingest": True},
        (SAVED, 75),
    ),
    (
        "another type's feature",
        {"type": 7001},
        {"organizations:metric-issue-poc-ingest": True},
        ("group_type_not_enabled", None),
    ),
]


@pytest.mark.parametrize(
    ("case", "fields", "options", "expected"), GROUP_TYPES, ids=[c[0] for c in GROUP_TYPES]
)
def test_group_type(
    decoder: MessageDecoder,
    storage: MemoryStorage,
    case: str,
    fields: dict[str, Any],
    options: dict[str, Any] | None,
    expected: tuple[str, int | None],
) -> None:
    """`issues/occurrence_consumer.py:186-190`: no priority takes the type's
    `default_priority`; `:189` and `:302` look the type up (`grouptype.py:100-103` raises for an
    unregistered id); `:302-310` drops an unreleased type unless the organization has its
    `organizations:<slug>-ingest` feature (`grouptype.py:171-176`), here an organization
    option."""
    if options is not None:
        storage.organization_option_rows[ORG_ID] = options
    outcome = _check(decoder, storage, occurrence(**fields), expected[0])
    if expected[1] is not None:
        assert outcome.document is not None
        assert outcome.document["initial_issue_priority"] == expected[1]
        assert outcome.document["type"] == fields["type"]


# ----------------------------------------------------------------------------- event ids

HEX = uuid.uuid4()
EVENT_IDS: list[tuple[str, Any, Any, str]] = [
    ("both hex", HEX.hex, HEX.hex, SAVED),
    ("both dashed", str(HEX), str(HEX), SAVED),
    ("top dashed, event hex", str(HEX), HEX.hex, SAVED),
    ("top hex, event upper-case", HEX.hex, HEX.hex.upper(), SAVED),
    ("only the event's, hex", None, HEX.hex, SAVED),
    ("only the event's, dashed", None, str(HEX), "event_id_mismatch"),
    ("only the event's, upper-case", None, HEX.hex.upper(), "event_id_mismatch"),
    ("top only, the event's absent", HEX.hex, ..., "missing_event_id"),
    ("top only, the event's empty", HEX.hex, "", "missing_event_id"),
    ("neither", None, ..., "missing_event_id"),
    ("different", HEX.hex, uuid.uuid4().hex, "event_id_mismatch"),
    ("the event's not a UUID", HEX.hex, "zz", "invalid_id"),
]


@pytest.mark.parametrize(
    ("case", "top", "nested", "expected"), EVENT_IDS, ids=[c[0] for c in EVENT_IDS]
)
def test_event_id_forms(
    decoder: MessageDecoder, storage: MemoryStorage, case: str, top: Any, nested: Any, expected: str
) -> None:
    """`issues/occurrence_consumer.py:180-181` takes a truthy top-level id as `UUID().hex`, else
    (`:201-202`) the event's id as written; `:205` parses the event's own id whatever happens
    (absent or empty fails); `process_event_and_issue_occurrence` (`:110-113`) refuses the two
    when they differ, so an event-only id must already be 32 lowercase hex digits."""
    body = event()
    if nested is ...:
        del body["event_id"]
    else:
        body["event_id"] = nested
    outcome = _check(decoder, storage, occurrence(body, event_id=top), expected)
    if expected == SAVED:
        assert outcome.document is not None and outcome.event is not None
        assert outcome.document["event_id"] == HEX.hex == outcome.event["event_id"]


# ----------------------------------------------------------------------------- the event

EVENTS: list[tuple[str, Any, str]] = [
    ("an object", {}, SAVED),
    ("null", None, "invalid_event"),
    ("a list", [1], "invalid_event"),
    ("user id a number", {"user": {"id": 42}}, "invalid_event_payload"),
    ("user a string", {"user": "bob"}, "invalid_event_payload"),
    ("occurrence level empty", {"level": ""}, "invalid_event_payload"),
    ("level unknown", {"level": "warn"}, SAVED),  # the legacy schema takes any level
    ("level unknown, numeric time", {"level": "warn", "timestamp": 1.5}, "invalid_event_payload"),
    ("tag value a number", {"tags": {"attempt": 1}}, SAVED),  # legacy: tags is any object
    (
        "tag value a number, numeric time",
        {"tags": {"attempt": 1}, "timestamp": 1.5},
        "invalid_event_payload",
    ),
    ("bare-list breadcrumbs", {"breadcrumbs": []}, SAVED),  # legacy: an array
    (
        "bare-list breadcrumbs, list tags",
        {"breadcrumbs": [], "tags": [["a", "b"]]},
        "invalid_event_payload",
    ),
    ("no platform", {"platform": ...}, "invalid_event_payload"),
    ("no received", {"received": ...}, "invalid_event_payload"),
    (
        "dist an object",
        {"dist": {"dist": "1", "release": "r"}, "timestamp": 1.5},
        "invalid_event_payload",
    ),
]


@pytest.mark.parametrize(("case", "change", "expected"), EVENTS, ids=[c[0] for c in EVENTS])
def test_event_payload(
    decoder: MessageDecoder, storage: MemoryStorage, case: str, change: Any, expected: str
) -> None:
    """`issues/occurrence_consumer.py:193-194` reads the event with `.get` (anything but an
    object fails); `:204-233` builds the event (`received` defaults to a datetime, which no
    schema takes); `:235-254` validates it against `issues/event.schema.json`, then against
    `LEGACY_EVENT_PAYLOAD_SCHEMA`, and raises when both refuse it."""
    message = occurrence()
    if not isinstance(change, dict):
        message["event"] = change
    else:
        for key, value in change.items():
            target = message if key == "level" else message["event"]
            if value is ...:
                del target[key]
            else:
                target[key] = value
    _check(decoder, storage, message, expected)


# ----------------------------------------------------------------------------- buffered spans


def test_buffered_spans(decoder: MessageDecoder, storage: MemoryStorage) -> None:
    """`issues/occurrence_consumer.py:261-265` and `:312-313`: with `is_buffered_spans: true`
    the event is built and validated but not saved (`create_event_and_issue_occurrence`,
    `:70-107`), and `save_issue_occurrence` stores the occurrence document."""
    outcome = _check(decoder, storage, occurrence(is_buffered_spans=True), "document_only")
    assert outcome.document is not None and outcome.event is None
    assert len(storage.nodestore.rows) == 1
    message = occurrence(is_buffered_spans=True, event_id=str(uuid.uuid4()))
    message["event"]["event_id"] = uuid.uuid4().hex
    _check(decoder, storage, message, "event_id_mismatch")
    not_true = occurrence(is_buffered_spans="yes")
    _check(decoder, storage, not_true, SAVED)  # only `true` counts


# ----------------------------------------------------------------------------- evidence

EVIDENCE: list[tuple[str, Any, str]] = [
    ("empty", [], SAVED),
    ("extra keys", [{"name": "n", "value": "v", "important": True, "x": 1}], SAVED),
    ("absent", ..., "invalid_evidence_display"),
    ("null", None, "invalid_evidence_display"),
    ("an object", {"name": "n"}, "invalid_evidence_display"),
    ("entry without important", [{"name": "n", "value": "v"}], "invalid_evidence_display"),
    ("entry a string", ["n"], "invalid_evidence_display"),
]


@pytest.mark.parametrize(("case", "value", "expected"), EVIDENCE, ids=[c[0] for c in EVIDENCE])
def test_evidence_display(
    decoder: MessageDecoder, storage: MemoryStorage, case: str, value: Any, expected: str
) -> None:
    """`issues/issue_occurrence.py:158-161`: `from_dict` iterates `evidence_display` (None
    fails) and reads `name`, `value` and `important` of each entry with `[]`; `to_dict`
    (`:116`, `:56-63`) writes back exactly those three."""
    message = occurrence()
    if value is ...:
        del message["evidence_display"]
    else:
        message["evidence_display"] = value
    outcome = _check(decoder, storage, message, expected)
    if case == "extra keys":
        assert outcome.document is not None
        assert outcome.document["evidence_display"] == [
            {"name": "n", "value": "v", "important": True}
        ]


# ----------------------------------------------------------------------------- the document


def _from_dict(document: dict[str, Any]) -> dict[str, Any]:
    """What Sentry's `IssueOccurrence.from_dict` (`issues/issue_occurrence.py:125-168`) reads,
    each key as it reads it: `[]` for the required ones, `.get` for the rest; then `to_dict`
    (`:104-123`) of the result, which must give the document back."""
    level = document.get("level") or "info"
    culprit = document.get("culprit") or ""
    evidence = [
        {"name": e["name"], "value": e["value"], "important": e["important"]}
        for e in document["evidence_display"]
    ]
    detection = document["detection_time"]
    assert isinstance(detection, float)
    return {
        "id": document["id"],
        "project_id": document["project_id"],
        "event_id": document["event_id"],
        "fingerprint": document["fingerprint"],
        "issue_title": document["issue_title"],
        "subtitle": document["subtitle"],
        "resource_id": document["resource_id"],
        "evidence_data": document["evidence_data"],
        "evidence_display": evidence,
        "type": document["type"],
        "detection_time": datetime.fromtimestamp(detection, UTC).timestamp(),
        "level": level,
        "culprit": culprit,
        "initial_issue_priority": document.get("initial_issue_priority"),
        "assignee": document.get("assignee"),
    }


def test_the_stored_document_is_what_sentry_reads_and_writes(
    decoder: MessageDecoder, storage: MemoryStorage
) -> None:
    """CONTRACT §4: the `i-o:` node is `IssueOccurrence.to_dict()`; Sentry's `fetch` reads it
    with `from_dict`. A minimal message (no level, culprit, priority, resource or evidence
    data) and a full one, dashed ids, an assignee (never validated here: no members)."""
    body = event()
    minimal = _without(
        occurrence(body, event_id=None, fingerprint=["a", "b"]),
        "level", "resource_id", "evidence_data", "payload_type",
    )  # fmt: skip
    full = occurrence(
        event(),
        id=str(uuid.uuid4()),
        level="error",
        culprit="views.checkout",
        resource_id="r-1",
        evidence_data={"op": "db"},
        evidence_display=[{"name": "Query", "value": "SELECT 1", "important": True}],
        initial_issue_priority=75,
        assignee="user:1",
    )
    full["event_id"] = str(uuid.UUID(full["event"]["event_id"]))
    documents = []
    for message in (minimal, full):
        outcome = _check(decoder, storage, message, SAVED)
        document = outcome.document
        assert document is not None
        assert list(document) == list(_from_dict(document))  # only its own keys, in order
        assert _from_dict(document) == document
        assert document["id"] == uuid.UUID(message["id"]).hex
        assert document["fingerprint"] == [
            hashlib.md5(part.encode(), usedforsecurity=False).hexdigest()
            for part in message["fingerprint"]
        ]
        assert document["assignee"] is None
        documents.append(document)
    small, large = documents
    assert (small["level"], small["culprit"], small["initial_issue_priority"]) == ("info", "", 25)
    assert small["resource_id"] is None and small["evidence_data"] is None
    assert (large["level"], large["culprit"], large["initial_issue_priority"]) == (
        "error",
        "views.checkout",
        75,
    )
