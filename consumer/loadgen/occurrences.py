"""Wrap events as issue occurrences, the way Sentry's issue-platform producer shapes them
(reference §7.2): a fresh occurrence id and event id, the event under `event`, the first
fingerprint as the Kafka key. And spoil some of them, because bad input is part of real load.

Pure: no I/O. `messages()` turns a stream of samples (events, or raw bytes of files that are not
JSON objects) into the messages `consumer produce` sends, each labelled with its kind.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson

# A few released issue types of Sentry's issue platform (performance, profiling, cron monitors,
# feedback): an unreleased one is refused unless its organization enables it.
GROUP_TYPES = (1001, 1006, 2007, 4001, 6001)

# Project ids far above any a database hands out, for messages about projects that do not exist.
UNKNOWN_PROJECT_BASE = 9_000_000_000

# An event, or the raw bytes of a sample file that is not a JSON object (sent as they are).
Sample = dict[str, Any] | bytes

GOOD = "good"
RAW_FILE = "raw_file"


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


def _seconds(value: Any) -> float | None:
    """A timestamp as Unix seconds: a number, or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def build_occurrence(
    event: dict[str, Any], project_id: int, rng: random.Random, now: datetime | None = None
) -> dict[str, Any]:
    """The occurrence message (as a dict) carrying a copy of `event` with a fresh event id and
    current timestamps; a transaction keeps its duration (`start_timestamp` moves along)."""
    now = now or datetime.now(UTC)
    event_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    occurrence_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    title = _title(event)
    fingerprint = hashlib.md5(f"{project_id}:{title}".encode(), usedforsecurity=False).hexdigest()
    stamp = now.isoformat()
    body = dict(event)
    start, end = _seconds(event.get("start_timestamp")), _seconds(event.get("timestamp"))
    if start is not None and end is not None and 0 <= end - start < 86_400:
        body["start_timestamp"] = now.timestamp() - (end - start)
    body.update(event_id=event_id, project_id=project_id, timestamp=stamp, received=stamp)
    body.setdefault("platform", "python")
    body.setdefault("tags", {})
    return {
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


def wrap_event(
    event: dict[str, Any], project_id: int, rng: random.Random, now: datetime | None = None
) -> tuple[bytes, bytes]:
    """Return (key, value) of an `ingest-occurrences` message carrying a copy of `event` with a
    fresh event id and current timestamps."""
    occurrence = build_occurrence(event, project_id, rng, now)
    return occurrence["fingerprint"][0].encode(), orjson.dumps(occurrence)


# ----------------------------------------------------------------------------- bad messages


def _truncated(occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    value = orjson.dumps(occurrence)
    return value[: rng.randrange(1, len(value))]  # a strict prefix of an object never parses


def _not_utf8(_occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    return b"\xff\xfe" + rng.randbytes(rng.randrange(8, 256))


def _not_an_object(occurrence: dict[str, Any], _rng: random.Random) -> bytes | None:
    return orjson.dumps([occurrence])


def _missing_field(occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    del occurrence[rng.choice(("id", "project_id", "fingerprint"))]
    return orjson.dumps(occurrence)


def _wrong_type(occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    field = rng.choice(("project_id", "fingerprint", "type"))
    occurrence[field] = {
        "project_id": str(occurrence["project_id"]),
        "fingerprint": occurrence["fingerprint"][0],
        "type": "error",
    }[field]
    return orjson.dumps(occurrence)


def _invalid_id(occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    bad = rng.choice(("not-a-uuid", "", "12345", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"))
    occurrence["event_id"] = bad
    occurrence["event"]["event_id"] = bad
    return orjson.dumps(occurrence)


def _event_not_object(occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    occurrence["event"] = rng.choice(("an event", ["an", "event"], 42))
    return orjson.dumps(occurrence)


def _unknown_payload_type(occurrence: dict[str, Any], _rng: random.Random) -> bytes | None:
    occurrence["payload_type"] = "feedback_v9"
    return orjson.dumps(occurrence)


def _empty_value(_occurrence: dict[str, Any], _rng: random.Random) -> bytes | None:
    return None


def _unknown_project(occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    project_id = UNKNOWN_PROJECT_BASE + rng.randrange(1_000_000)
    occurrence["project_id"] = project_id
    occurrence["event"]["project_id"] = project_id
    return orjson.dumps(occurrence)


# Kinds of bad message, each a way a real producer gets it wrong. All but `unknown_project` are
# rejected by decoding alone; an unknown project is found when the batch is saved.
BAD_KINDS: dict[str, Callable[[dict[str, Any], random.Random], bytes | None]] = {
    "invalid_json": _truncated,
    "not_utf8": _not_utf8,
    "not_an_object": _not_an_object,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "invalid_id": _invalid_id,
    "event_not_object": _event_not_object,
    "unknown_payload_type": _unknown_payload_type,
    "empty_value": _empty_value,
    "unknown_project": _unknown_project,
}


def bad_message(kind: str, occurrence: dict[str, Any], rng: random.Random) -> bytes | None:
    """The value of a bad message of `kind`, spoiled from `occurrence` (which it may change)."""
    return BAD_KINDS[kind](occurrence, rng)


# ----------------------------------------------------------------------------- the stream


@dataclass(frozen=True, slots=True)
class Message:
    """One message to produce. `kind` is GOOD, RAW_FILE (a sample file that is not a JSON
    object, sent as it is) or one of BAD_KINDS; `event_id` is set for GOOD messages."""

    key: bytes | None
    value: bytes | None
    kind: str
    project_id: int | None = None
    event_id: str | None = None


def is_bad(index: int, ratio: float) -> bool:
    """Whether message `index` (from 0) is bad: spreads exactly floor(n * ratio) bad ones evenly
    over any first n messages."""
    return int((index + 1) * ratio + 1e-9) > int(index * ratio + 1e-9)


def messages(
    samples: Iterator[Sample],
    project_ids: Sequence[int],
    rng: random.Random,
    *,
    bad_ratio: float = 0.0,
    bad_kinds: Sequence[str] | None = None,
) -> Iterator[Message]:
    """Endless messages: each sample wrapped as an occurrence for one of `project_ids` (a few
    projects get most of the traffic, as in real deployments), a `bad_ratio` share of them
    spoiled with a random kind from `bad_kinds` (default: all). Raw samples pass through as
    RAW_FILE."""
    bad_kinds = tuple(bad_kinds or BAD_KINDS)
    if not project_ids:
        raise ValueError("at least one project id is needed")
    if not 0.0 <= bad_ratio <= 1.0:
        raise ValueError("bad_ratio must be between 0 and 1")
    unknown = set(bad_kinds) - set(BAD_KINDS)
    if unknown:
        raise ValueError(f"unknown kinds of bad message: {sorted(unknown)}")
    # Zipf-like weights: the first project gets the most traffic, the others less and less.
    cumulative = list(accumulate(1.0 / (rank + 1) for rank in range(len(project_ids))))
    index = 0
    for sample in samples:
        if isinstance(sample, bytes):
            yield Message(None, sample, RAW_FILE)
            index += 1
            continue
        project_id = rng.choices(project_ids, cum_weights=cumulative)[0]
        occurrence = build_occurrence(sample, project_id, rng)
        key = occurrence["fingerprint"][0].encode()
        if bad_ratio and is_bad(index, bad_ratio):
            kind = rng.choice(bad_kinds)
            yield Message(key, bad_message(kind, occurrence, rng), kind, project_id)
        else:
            value = orjson.dumps(occurrence)
            yield Message(key, value, GOOD, project_id, occurrence["event_id"])
        index += 1
