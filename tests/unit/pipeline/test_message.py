"""Message to Job: validation, skips, the event Sentry's occurrence consumer builds (reference
§7.2), normalization and the pulled-out attributes and tags (reference §2.0)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from consumer.errors import BadMessage
from consumer.pipeline.job import Job
from consumer.pipeline.message import MessageDecoder, Skip, decode
from consumer.pipeline.toplevel import pull_out
from tests.unit.pipeline.builders import PROJECT_ID, encode, event, occurrence


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _without(message: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != key}


def _event_without(key: str) -> dict[str, Any]:
    body = event()
    del body[key]
    return occurrence(body)


BAD: list[tuple[str, Callable[[], bytes | None], str]] = [
    ("no value", lambda: None, "empty_message"),
    ("not JSON", lambda: b'{"id": ', "invalid_json"),
    ("a JSON array", lambda: b"[1, 2]", "not_an_object"),
    ("no id", lambda: encode(_without(occurrence(), "id")), "schema_violation"),
    ("no fingerprint", lambda: encode(_without(occurrence(), "fingerprint")), "schema_violation"),
    ("project_id a string", lambda: encode(occurrence(project_id="1")), "schema_violation"),
    ("type a string", lambda: encode(occurrence(type="perf")), "schema_violation"),
    ("id not a UUID", lambda: encode(occurrence(id="nope")), "invalid_id"),
    ("event_id not a UUID", lambda: encode(occurrence(event_id="zz")), "invalid_id"),
    ("no issue_title", lambda: encode(_without(occurrence(), "issue_title")), "missing_field"),
    ("no subtitle", lambda: encode(_without(occurrence(), "subtitle")), "missing_field"),
    ("no type", lambda: encode(_without(occurrence(), "type")), "missing_field"),
    ("type null", lambda: encode(occurrence(type=None)), "unknown_group_type"),
    (
        "no detection_time",
        lambda: encode(_without(occurrence(), "detection_time")),
        "missing_field",
    ),
    (
        "detection_time a date",
        lambda: encode(occurrence(detection_time="2023-01-19")),
        "invalid_field",
    ),
    ("level a number", lambda: encode(occurrence(level=3)), "invalid_event_payload"),
    (
        "unknown payload_type",
        lambda: encode(occurrence(payload_type="other")),
        "unknown_payload_type",
    ),
    ("event a list", lambda: encode(occurrence(event=[1])), "invalid_event"),
    (
        "event of another project",
        lambda: encode(occurrence(event(project_id=2), project_id=1)),
        "project_mismatch",
    ),
    (
        "event without project_id",
        lambda: encode(occurrence(_without(event(), "project_id"), project_id=1)),
        "project_mismatch",
    ),
    (
        "event ids that differ",
        lambda: encode(occurrence(event(), event_id=uuid.uuid4().hex)),
        "event_id_mismatch",
    ),
    (
        "no event id anywhere",
        lambda: encode(occurrence(_without(event(), "event_id"), event_id=None)),
        "missing_event_id",
    ),
    (
        "event.event_id not a UUID",
        lambda: encode(occurrence(event(event_id="x"), event_id=None)),
        "invalid_id",
    ),
    (
        "event without platform",
        lambda: encode(_event_without("platform")),
        "invalid_event_payload",
    ),
    (
        "event without timestamp",
        lambda: encode(_event_without("timestamp")),
        "invalid_event_payload",
    ),
    (
        "event timestamp an object",
        lambda: encode(occurrence(event(timestamp={}))),
        "invalid_event_payload",
    ),
    # Sentry's default for a missing `received` is a datetime object, which fails its schema.
    (
        "event without received",
        lambda: encode(_event_without("received")),
        "invalid_event_payload",
    ),
    (
        "event received a list",
        lambda: encode(occurrence(event(received=[1]))),
        "invalid_event_payload",
    ),
    # Relay refuses events nested deeper than it parses...
    (
        "event nested too deep for Relay",
        lambda: encode(occurrence(event(extra=_nested(150)))),
        "normalization_failed",
    ),
    # ...and orjson refuses to encode past 255 levels (another producer may send it).
    (
        "event nested too deep to encode",
        lambda: json.dumps(occurrence(event(extra=_nested(400)))).encode(),
        "normalization_failed",
    ),
]


@pytest.mark.parametrize(("case", "value", "reason"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_messages_carry_a_reason_and_a_detail(
    decoder: MessageDecoder, case: str, value: Callable[[], bytes | None], reason: str
) -> None:
    with pytest.raises(BadMessage) as raised:
        decoder(value())
    assert raised.value.reason == reason, raised.value.detail
    assert raised.value.detail, f"{case}: a dead letter needs a detail"
    assert "\n" not in raised.value.detail


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (occurrence(payload_type="status_change"), "status_change"),
        (_without(occurrence(), "event"), "no_event"),
    ],
)
def test_skips(decoder: MessageDecoder, message: dict[str, Any], reason: str) -> None:
    assert decoder(encode(message)) == Skip(reason)


def _decode(decoder: MessageDecoder, message: dict[str, Any]) -> Job:
    """Decoded, then pulled apart as the save step does first."""
    result = decoder(encode(message))
    assert isinstance(result, Job)
    assert not result.pulled and result.release is None  # decode leaves that to the save step
    pull_out(result)
    return result


def test_the_event_keeps_only_what_sentrys_consumer_forwards(decoder: MessageDecoder) -> None:
    body = event(
        level="fatal",
        exception={"values": [{"type": "ValueError", "value": "boom"}]},
        logentry={"formatted": "a message"},
        fingerprint=["x"],
        culprit="from the event",
        title="from the event",
        dist="d1",
        release="r1",
        environment="prod",
        server_name="web-1",
        trace_id="a" * 32,
        transaction="GET /",
        extra={"k": "v"},
        modules={"django": "5.0"},
    )
    job = _decode(decoder, occurrence(body, level="warning", issue_title="N+1 query"))
    data = job.data
    for dropped in ("exception", "logentry", "fingerprint", "culprit", "title", "project_id"):
        assert dropped not in data, dropped
    assert data["level"] == "warning"  # the occurrence's, not the event's
    assert data["metadata"] == {"title": "N+1 query"}
    assert data["type"] == "generic"
    assert data["project"] == PROJECT_ID
    assert data["trace_id"] == "a" * 32  # an unknown key survives (remove_other=False)
    assert (data["release"], data["dist"], data["environment"]) == ("r1", "d1", "prod")
    assert data["extra"] == {"k": "v"} and data["modules"] == {"django": "5.0"}
    assert ["server_name", "web-1"] in data["tags"]


def test_level_defaults_to_info_and_null_becomes_relays_default(decoder: MessageDecoder) -> None:
    assert _decode(decoder, _without(occurrence(), "level")).data["level"] == "info"
    null_level = _decode(decoder, occurrence(level=None))
    assert null_level.data["level"] == "error"
    assert orjson.loads(null_level.occurrence_json)["level"] == "info"


def test_ids(decoder: MessageDecoder) -> None:
    event_uuid = uuid.uuid4()
    occurrence_uuid = uuid.uuid4()
    # a dashed top-level id becomes hex, and the event's own id may be dashed too
    message = occurrence(event(event_id=str(event_uuid)), event_id=str(event_uuid))
    job = _decode(decoder, _with(message, id=str(occurrence_uuid)))
    assert job.event_id == event_uuid.hex == job.data["event_id"]
    assert job.occurrence_id == occurrence_uuid.hex
    # the event's id is used when the occurrence has none
    job = _decode(decoder, occurrence(event(event_id=event_uuid.hex), event_id=None))
    assert job.event_id == event_uuid.hex
    # the same id in both forms agrees
    job = _decode(decoder, occurrence(event(event_id=event_uuid.hex), event_id=str(event_uuid)))
    assert job.event_id == event_uuid.hex


def _with(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**message, **fields}


def test_the_occurrence_document_is_sentrys(decoder: MessageDecoder) -> None:
    message = occurrence(fingerprint=["fp-1"], culprit=None)
    job = _decode(decoder, message)
    document = orjson.loads(job.occurrence_json)
    assert document["fingerprint"] == ["acbb30f1b7e779dd4f8ac4ed7a40c4b0"]  # md5 of "fp-1"
    assert document["culprit"] == ""
    assert "event" not in document and "payload_type" not in document
    assert job.size == len(encode(message))


def test_pulled_out_attributes_and_their_tags(decoder: MessageDecoder) -> None:
    body = event(
        release="app@1.0",
        dist="42",
        environment="production",
        transaction="checkout.views.submit",
        logger="payments",  # not forwarded by the occurrence consumer: Relay's "" instead
        tags={"shard": "3", "release": "client-sent", "user": "client-sent"},
    )
    job = _decode(decoder, occurrence(body, level="error"))
    assert (job.release, job.dist, job.environment) == ("app@1.0", "42", "production")
    assert (job.level, job.logger_name, job.transaction) == ("error", "", "checkout.views.submit")
    assert job.data["tags"] == [
        ["shard", "3"],  # Relay drops the client's release and user tags
        ["level", "error"],
        ["environment", "production"],
        ["transaction", "checkout.views.submit"],
    ]


def test_empty_attributes_make_no_tags(decoder: MessageDecoder) -> None:
    job = _decode(decoder, occurrence(event(transaction="", tags=None)))
    assert job.data["tags"] == [["level", "warning"]]  # Relay's logger "" makes no tag
    assert job.environment is None and job.transaction == ""


def test_an_environment_tag_becomes_the_environment(decoder: MessageDecoder) -> None:
    job = _decode(decoder, occurrence(event(tags={"environment": "staging"})))
    assert job.environment == "staging"
    assert ["environment", "staging"] in job.data["tags"]


@pytest.fixture
def tokyo() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("tokyo")
def test_event_time_is_utc_whatever_the_hosts_time_zone(decoder: MessageDecoder) -> None:
    moment = datetime.now(UTC).replace(microsecond=0)
    job = _decode(decoder, occurrence(event(timestamp=moment.strftime("%Y-%m-%dT%H:%M:%SZ"))))
    assert job.datetime == moment
    assert job.datetime is not None and job.datetime.utcoffset() is not None
    assert job.datetime.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_module_decode_uses_one_process_wide_decoder() -> None:
    first = decode(encode(occurrence()))
    assert isinstance(first, Job)
    assert first.normalize_seconds > 0 and first.decode_seconds > 0
