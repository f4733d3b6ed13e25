"""The occurrence document (the `i-o:` node, CONTRACT §4): what Sentry's
`IssueOccurrence.to_dict` writes for the occurrence its consumer built from the message
(reference `sentry-issue-platform.md` §1.2). Pure.

Sentry builds the occurrence's data in `_get_kwargs` (`occurrence_consumer.py:163-190` at
`7698ea90003c`), turns it into an `IssueOccurrence` (`issue_occurrence.py:125-168`, `from_dict`)
and stores `to_dict()` (`:104-123`). What that round trip gives, key by key, in its order:

    id                      UUID(id).hex
    project_id              as given
    event_id                the top-level id's hex, else the event's (which must be hex)
    fingerprint             md5 hex of each part's UTF-8 (`ingest.py:71-76`)
    issue_title, subtitle   as given (null passes)
    resource_id             as given, null when absent
    evidence_data           as given, null when absent
    evidence_display        each entry reduced to name, value, important; entries without one of
                            those, and an absent or non-list display, fail `from_dict`
    type                    the group type's id
    detection_time          float epoch seconds: a number as UTC epoch, a string as
                            `%Y-%m-%dT%H:%M:%S[.ffffff][Z]` in UTC; anything else fails
    level                   as given, "info" when falsy
    culprit                 as given, "" when falsy
    initial_issue_priority  as given, the type's default priority when null or absent
    assignee                null: Sentry keeps an actor only once validated as a member or team
                            of the organization, and this store has neither
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from consumer.errors import BadMessage
from consumer.pipeline.group_types import GroupType

DEFAULT_LEVEL = "info"


def hash_fingerprint(parts: list[str]) -> list[str]:
    return [hashlib.md5(part.encode(), usedforsecurity=False).hexdigest() for part in parts]


def detection_epoch(value: Any) -> float | None:
    """`parse_timestamp(value).timestamp()` (`utils/dates.py:79-97`), None where Sentry gets no
    datetime (its occurrence then fails)."""
    if isinstance(value, int | float):  # bool included, as `isinstance(True, int)`
        try:
            return datetime.fromtimestamp(value, UTC).timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    whole, dot, fraction = value.rstrip("Z").encode("ascii", "replace").partition(b".")
    try:
        moment = datetime.strptime(whole.decode("ascii"), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    if dot:
        try:
            moment = moment.replace(microsecond=int(fraction.ljust(6, b"0")[:6]))
        except ValueError:
            return None
    return moment.replace(tzinfo=UTC).timestamp()


def _evidence_display(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise BadMessage(
            "invalid_evidence_display",
            f"evidence_display must be a list, not {type(value).__name__}",
        )
    display = []
    for entry in value:
        if not isinstance(entry, dict) or not {"name", "value", "important"} <= entry.keys():
            raise BadMessage(
                "invalid_evidence_display",
                "every evidence_display entry needs name, value and important",
            )
        display.append(
            {"name": entry["name"], "value": entry["value"], "important": entry["important"]}
        )
    return display


def occurrence_document(
    message: dict[str, Any], occurrence_id: str, event_id: str, group_type: GroupType
) -> dict[str, Any]:
    """The document Sentry stores for this message (whose ids and type are already checked);
    BadMessage where Sentry's `from_dict` fails."""
    get = message.get
    evidence_display = _evidence_display(get("evidence_display"))
    detection_time = detection_epoch(message["detection_time"])
    if detection_time is None:
        raise BadMessage(
            "invalid_field",
            f"detection_time {str(message['detection_time'])[:40]!r} is neither a number nor "
            "a date Sentry parses",
        )
    priority = get("initial_issue_priority")
    return {
        "id": occurrence_id,
        "project_id": message["project_id"],
        "event_id": event_id,
        "fingerprint": hash_fingerprint(message["fingerprint"]),
        "issue_title": message["issue_title"],
        "subtitle": message["subtitle"],
        "resource_id": get("resource_id"),
        "evidence_data": get("evidence_data"),
        "evidence_display": evidence_display,
        "type": group_type.type_id,
        "detection_time": detection_time,
        "level": get("level") or DEFAULT_LEVEL,
        "culprit": get("culprit") or "",
        "initial_issue_priority": int(group_type.default_priority)
        if priority is None
        else priority,
        "assignee": None,
    }
