"""Wrap events as issue occurrences, the way Sentry's issue-platform producer shapes them
(reference §7.2): a fresh occurrence id and event id, the event under `event`, the first
fingerprint as the Kafka key."""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

# A few issue types of Sentry's issue platform (performance, profiling, cron monitors, feedback).
GROUP_TYPES = (1001, 1006, 2001, 4001, 6001)


def _title(event: dict[str, Any]) -> str:
    exception = event.get("exception")
    values = exception.get("values") if isinstance(exception, dict) else None
    if isinstance(values, list) and values and isinstance(values[-1], dict):
        last = values[-1]
        return f"{last.get('type') or 'Error'}: {last.get('value') or ''}".strip()[:200]
    message = event.get("message") or event.get("logentry") or "Untitled occurrence"
    if isinstance(message, dict):
        message = message.get("formatted") or message.get("message") or "Untitled occurrence"
    return str(message)[:200]


def wrap_event(
    event: dict[str, Any], project_id: int, rng: random.Random, now: datetime | None = None
) -> tuple[bytes, bytes]:
    """Return (key, value) of an `ingest-occurrences` message carrying a copy of `event` with a
    fresh event id and current timestamps."""
    now = now or datetime.now(UTC)
    event_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    occurrence_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    title = _title(event)
    fingerprint = hashlib.md5(f"{project_id}:{title}".encode(), usedforsecurity=False).hexdigest()
    stamp = now.isoformat()
    body = dict(event)
    body.update(event_id=event_id, project_id=project_id, timestamp=stamp, received=stamp)
    body.setdefault("platform", "python")
    body.setdefault("tags", {})
    occurrence = {
        "id": occurrence_id,
        "project_id": project_id,
        "event_id": event_id,
        "fingerprint": [fingerprint],
        "issue_title": title,
        "subtitle": "Detected from a sentry-sdk event",
        "resource_id": None,
        "evidence_data": {},
        "evidence_display": [{"name": "Source", "value": "load generator", "important": False}],
        "type": rng.choice(GROUP_TYPES),
        "detection_time": now.timestamp(),
        "level": body.get("level") or "error",
        "culprit": "",
        "initial_issue_priority": None,
        "assignee": None,
        "payload_type": "occurrence",
        "event": body,
    }
    return fingerprint.encode(), orjson.dumps(occurrence)
