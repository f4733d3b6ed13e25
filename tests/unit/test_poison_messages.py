"""Messages that pass decoding but could never be saved are bad messages, found before the
batch: a save that fails the same way on every retry would stop its partition for good (the
fault suite found both: `tests/faults/corpus.py`)."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from consumer.errors import BadMessage
from consumer.loadgen.occurrences import build_occurrence
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.job import Job
from consumer.pipeline.message import decode
from consumer.storage.nodestore import encode_blob


@pytest.fixture(scope="module")
def occurrence() -> dict[str, Any]:
    return build_occurrence(capture_events(1, seed=7)[0], 42, random.Random(7))


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def test_an_occurrence_nested_deeper_than_the_nodestore_writes_is_a_bad_message(
    occurrence: dict[str, Any],
) -> None:
    occurrence["evidence_data"] = {"deep": _nested(300)}
    value = json.dumps(occurrence).encode()  # orjson itself cannot write it, a producer can
    assert orjson.loads(value)["evidence_data"]  # readable, 300 levels < orjson's 1024...
    with pytest.raises(TypeError):  # ...but not writable: the nodestore write would fail
        encode_blob({"evidence_data": orjson.loads(value)["evidence_data"]})

    with pytest.raises(BadMessage) as raised:
        decode(value)
    assert raised.value.reason == "too_deeply_nested"


def test_an_occurrence_nested_as_deep_as_the_nodestore_writes_is_saved(
    occurrence: dict[str, Any],
) -> None:
    occurrence["evidence_data"] = {"deep": _nested(200)}
    job = decode(json.dumps(occurrence).encode())
    assert isinstance(job, Job)
    assert orjson.loads(job.occurrence_json)["evidence_data"] == {"deep": _nested(200)}


def test_an_integral_float_project_id_is_a_bad_message(occurrence: dict[str, Any]) -> None:
    """The schema's "integer" admits 5.0; saved, it would name the nodes md5("5.0:<id>")."""
    occurrence["project_id"] = 42.0
    with pytest.raises(BadMessage) as raised:
        decode(orjson.dumps(occurrence))
    assert raised.value.reason == "invalid_field"
    assert "project_id" in raised.value.detail


@pytest.mark.parametrize("project_id", [-1, 2**63, 2**64 - 1])
def test_a_project_id_outside_postgresql_bigint_is_a_bad_message(
    occurrence: dict[str, Any], project_id: int
) -> None:
    """Looked up, 2**63 fails with NumericValueOutOfRange on every retry of its batch."""
    occurrence["project_id"] = occurrence["event"]["project_id"] = project_id
    with pytest.raises(BadMessage) as raised:
        decode(orjson.dumps(occurrence))
    assert raised.value.reason == "invalid_field"
    assert str(project_id) in raised.value.detail


def test_the_largest_bigint_project_id_is_decoded(occurrence: dict[str, Any]) -> None:
    occurrence["project_id"] = occurrence["event"]["project_id"] = 2**63 - 1
    job = decode(orjson.dumps(occurrence))
    assert isinstance(job, Job)
    assert job.project_id == 2**63 - 1
