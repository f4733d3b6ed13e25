"""Small builders for pipeline tests: valid occurrence messages, and Jobs made by hand for the
pure steps."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from consumer.pipeline.job import Job
from consumer.pipeline.toplevel import pull_out

PROJECT_ID = 1
ORG_ID = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def event(**fields: Any) -> dict[str, Any]:
    """A minimal event an occurrence may carry (fresh id, timestamps now)."""
    body: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "project_id": PROJECT_ID,
        "platform": "python",
        "timestamp": now_iso(),
        "received": now_iso(),
        "tags": {},
    }
    body.update(fields)
    return body


def occurrence(event_body: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A valid occurrence message; `event_body=None` means the default event."""
    body = event_body if event_body is not None else event()
    message: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "project_id": body.get("project_id", PROJECT_ID),
        "event_id": body.get("event_id"),
        "fingerprint": ["fp-1"],
        "issue_title": "Slow DB query",
        "subtitle": "SELECT * FROM things",
        "resource_id": None,
        "evidence_data": {},
        "evidence_display": [],
        "type": 1001,
        "detection_time": datetime.now(UTC).timestamp(),
        "level": "warning",
        "payload_type": "occurrence",
        "event": body,
    }
    message.update(fields)
    return message


def encode(message: Any) -> bytes:
    return orjson.dumps(message)


# The occurrence document of `job()`: what grouping reads (one fingerprint, a type, a level).
OCCURRENCE_DOCUMENT = orjson.dumps(
    {
        "id": "occurrence",
        "fingerprint": ["fp-1"],
        "issue_title": "Slow DB query",
        "subtitle": "SELECT * FROM things",
        "type": 1001,
        "level": "warning",
    }
)


def job(data: dict[str, Any], *, project_id: int = PROJECT_ID, pulled: bool = True) -> Job:
    """A Job over an already normalized-looking event (a copy), pulled apart like decode does."""
    data = copy.deepcopy(data)
    data.setdefault("timestamp", datetime.now(UTC).timestamp())
    made = Job(
        project_id=project_id,
        event_id=data.get("event_id") or uuid.uuid4().hex,
        occurrence_id=uuid.uuid4().hex,
        data=data,
        occurrence_json=OCCURRENCE_DOCUMENT,
    )
    if pulled:
        pull_out(made)
    return made
