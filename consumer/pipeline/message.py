"""Message to Job: decode and validate one `ingest-occurrences` message (CONTRACT §2).

Pure: no I/O. Raises BadMessage with a stable `reason` for anything that can never be saved;
returns a Skip for messages that are valid but not saved (status changes, occurrences without
an event).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sentry_kafka_schemas import get_codec
from sentry_kafka_schemas.codecs import ValidationError

from consumer.errors import BadMessage
from consumer.pipeline.job import Job

_CODEC = get_codec("ingest-occurrences")


@dataclass(frozen=True, slots=True)
class Skip:
    """A valid message that is deliberately not saved; `reason` is its metric label."""

    reason: str


def decode(value: bytes | None) -> Job | Skip:
    if value is None:
        raise BadMessage("empty_message", "the message has no value")
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise BadMessage("invalid_json", str(error)) from None
    if not isinstance(message, dict):
        raise BadMessage("not_an_object", f"the message is a JSON {type(message).__name__}")
    try:
        _CODEC.validate(message)
    except ValidationError as error:
        raise BadMessage("schema_violation", str(error.__cause__ or error)) from None

    payload_type = message.get("payload_type") or "occurrence"
    if payload_type == "status_change":
        return Skip("status_change")
    if payload_type != "occurrence":
        raise BadMessage("unknown_payload_type", f"payload_type {payload_type!r}")
    event = message.get("event")
    if event is None:
        return Skip("no_event")
    if not isinstance(event, dict):
        raise BadMessage("invalid_event", "event is not an object")

    project_id = message["project_id"]
    occurrence_id = _hex_uuid(message["id"], "id")
    event_id = _hex_uuid(message.get("event_id") or event.get("event_id"), "event_id")
    occurrence = {key: value for key, value in message.items() if key != "event"}
    return Job(
        project_id=project_id,
        event_id=event_id,
        occurrence_id=occurrence_id,
        data=dict(event, event_id=event_id, project_id=project_id),
        occurrence=occurrence,
        size=len(value),
    )


def _hex_uuid(raw: Any, field_name: str) -> str:
    if not isinstance(raw, str):
        raise BadMessage("invalid_id", f"{field_name} must be a UUID string")
    try:
        return uuid.UUID(raw).hex
    except ValueError:
        raise BadMessage("invalid_id", f"{field_name} {raw[:64]!r} is not a UUID") from None
