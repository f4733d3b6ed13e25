"""Sentry's event schemas kept as data (`consumer/pipeline/schemas/`), and the fast validator
held to the verdicts of `jsonschema`, the library Sentry validates with."""

from __future__ import annotations

import copy
import hashlib
import random
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from consumer.loadgen.occurrences import wrap_event
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.event_schema import SCHEMA_FILES, EventSchemas, load
from consumer.pipeline.message import OPTIONAL_EVENT_KEYS
from tests.unit.pipeline.samples import REFUSED_BY_SENTRY, load_samples

# git blob ids: `git rev-parse 7698ea90003c:src/sentry/issues/event.schema.json` in Sentry's
# repository gives the first; the second is that commit's `LEGACY_EVENT_PAYLOAD_SCHEMA`
# (`issues/json_schemas.py:10-163`) written as JSON, so it is pinned by its SHA-256 instead.
EVENT_SCHEMA_BLOB = "fb77a12e6a4c9cbdd29b897dfd1b3b6d76b59cd3"
LEGACY_SCHEMA_SHA256 = "bfcea9f02aeb291c8e69da2c93cdb4e03f0f3b9793a46033955fc0b7cfc135f5"


def _raw(name: str) -> bytes:
    return resources.files("consumer.pipeline").joinpath("schemas", name).read_bytes()


def test_the_schemas_are_sentrys_as_pinned() -> None:
    raw = _raw("event.schema.json")
    blob = hashlib.sha1(b"blob %d\0" % len(raw) + raw, usedforsecurity=False).hexdigest()
    assert blob == EVENT_SCHEMA_BLOB
    assert hashlib.sha256(_raw("legacy_event.schema.json")).hexdigest() == LEGACY_SCHEMA_SHA256
    assert SCHEMA_FILES == ("event.schema.json", "legacy_event.schema.json")


# What `jsonschema.validate(data, schema)` does, its validator class chosen by `$schema`, without
# checking the schema itself again on every call.
_SENTRY_VALIDATORS = [
    jsonschema.validators.validator_for(schema)(schema)
    for schema in (load(name) for name in SCHEMA_FILES)
]


def _sentry_accepts(data: dict[str, Any]) -> bool:
    """`occurrence_consumer.py:235-254`, with the library Sentry uses."""
    return any(validator.is_valid(data) for validator in _SENTRY_VALIDATORS)


def _event_data(message: dict[str, Any]) -> dict[str, Any]:
    """The event Sentry validates (`occurrence_consumer.py:204-233`)."""
    event = message["event"]
    data = {
        "event_id": event.get("event_id"),
        "level": message.get("level", "info"),
        "project_id": event.get("project_id"),
        "platform": event.get("platform"),
        "received": event.get("received"),
        "tags": event.get("tags"),
        "timestamp": event.get("timestamp"),
    }
    data.update({key: event[key] for key in OPTIONAL_EVENT_KEYS if key in event})
    return data


CHANGES: list[dict[str, Any]] = [
    {},
    {"user": {"id": 42}},
    {"user": "bob"},
    {"tags": {"attempt": 1}},
    {"tags": {"attempt": 1}, "timestamp": 1.5},
    {"breadcrumbs": []},
    {"breadcrumbs": [], "timestamp": 2},
    {"breadcrumbs": {"values": [{"timestamp": 1.0, "message": "m"}]}},
    {"level": ""},
    {"level": None},
    {"level": "warn"},
    {"level": "warn", "tags": [["a", "b"]]},
    {"platform": None},
    {"sdk": {"name": "x", "version": "1.2"}},
    {"sdk": {"name": "x", "version": "1.2.3"}, "timestamp": 3},
    {"dist": {"dist": "1", "release": "r"}},
    {"request": {"url": 5}},
    {"contexts": {"os": {"name": 5}}},
    {"project_id": 1.0},
    {"unknown_key": 1},
]


def _corpus(samples_dir: Path | None) -> list[dict[str, Any]]:
    rng = random.Random(11)
    events = capture_events(40, seed=3)
    if samples_dir is not None:
        events += [sample.event for sample in load_samples(samples_dir) if sample.event]
    corpus = []
    for index, body in enumerate(events):
        data = _event_data(orjson.loads(wrap_event(body, 1, rng)[1]))
        corpus.append(data)
        changed = copy.deepcopy(data)
        changed.update(CHANGES[index % len(CHANGES)])
        corpus.append(changed)
    return corpus


@pytest.fixture
def optional_samples_dir(request: pytest.FixtureRequest) -> Path | None:
    try:
        found: Path = request.getfixturevalue("samples_dir")
    except pytest.skip.Exception:
        return None
    return found


def test_verdicts_are_jsonschemas(optional_samples_dir: Path | None) -> None:
    schemas = EventSchemas()
    corpus = _corpus(optional_samples_dir)
    refused = 0
    for data in corpus:
        before = orjson.dumps(data)
        accepted = _sentry_accepts(data)
        for _ in range(2):  # the second time from the caches
            assert (schemas.error(data) is None) == accepted, data
        assert orjson.dumps(data) == before, "validation must not change the event"
        refused += not accepted
    assert refused >= 5
    for changes in CHANGES:
        data = {**corpus[0], **changes}
        assert (schemas.error(data) is None) == _sentry_accepts(data), changes


def test_the_samples_sentry_refuses(samples_dir: Path) -> None:
    rng = random.Random(12)
    refused = {
        sample.name
        for sample in load_samples(samples_dir)
        if sample.event is not None
        and not _sentry_accepts(_event_data(orjson.loads(wrap_event(sample.event, 1, rng)[1])))
    }
    assert refused == REFUSED_BY_SENTRY
