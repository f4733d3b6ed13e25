"""Grouping rules as functions of data (reference sentry-issue-platform.md §1): fingerprint
hashing, the group's columns from an occurrence, and the fold of a batch's occurrences into an
existing group (update, regression). The storage facade applies them set-based, per batch
(`StorageAPI.save_groups`); nothing here does I/O.

Where this departs from Sentry, deliberately (CONTRACT §9):

* the group is found through *all* the occurrence's hashes, the first one in fingerprint order
  that is linked to a group winning, and the other hashes are linked to the group when free
  (newer Sentry, PR #87311, reference §7; Sentry as of 2024-05-20 looked up `fingerprint[0]`
  only);
* a culprit over 200 characters is cut to 197 plus `...` (newer Sentry, reference §8 P4);
* the message is stripped, cut to its first line and to 255 characters on updates too, not
  only on insert (reference §8 P9);
* the score uses the natural log on updates as on insert (reference §8 P10);
* only occurrences counted for the first time change a group (CONTRACT §9.7): a redelivered
  or replayed occurrence neither counts nor moves `last_seen`, the data, or the status.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from consumer.storage.models import GroupChange, GroupRow, IssueOccurrence, Regression

# GroupStatus and GroupSubStatus (models/group.py:155-168, types/group.py:5-17).
UNRESOLVED = 0
RESOLVED = 1
ONGOING = 3
REGRESSED = 6

# Activity and GroupHistory values written by a regression (types/activity.py, grouphistory.py).
ACTIVITY_SET_REGRESSION = 6
HISTORY_REGRESSED = 7
# PREVIOUS_STATUSES[REGRESSED] (models/grouphistory.py:119-138): the row a regression follows.
REGRESSION_PREVIOUS_STATUSES = (1, 11, 12, 13, 2)

# LOG_LEVELS_MAP (constants.py:219-229).
LOG_LEVELS = {"sample": 0, "debug": 10, "info": 20, "warning": 30, "error": 40, "fatal": 50}
DEFAULT_LEVEL = "info"  # issues/issue_occurrence.py:17

# PLACEHOLDER_EVENT_TITLES (constants.py:231).
PLACEHOLDER_TITLES = frozenset({"<untitled>", "<unknown>", "<unlabeled event>", "Error"})

# MEDIUM, the GroupType default (issues/grouptype.py:131-148): only for an occurrence document
# without `initial_issue_priority`; the decoder fills it with the type's default priority.
DEFAULT_PRIORITY = 50

MAX_CULPRIT_LENGTH = 200  # sentry_groupedmessage.view varchar(200)
MAX_MESSAGE_LENGTH = 255  # Group.save's first-line truncation (models/group.py:604-620)
MAX_SEARCH_MESSAGE_LENGTH = 8192  # SENTRY_MAX_MESSAGE_LENGTH
REGRESSION_WINDOW = timedelta(seconds=5)  # `NOT (active_at >= date - 5 s)`, event_manager.py


def hash_fingerprint(parts: Iterable[str]) -> tuple[str, ...]:
    """Each part as the lowercase hex MD5 of its UTF-8 bytes, order and duplicates kept
    (`process_occurrence_data`, issues/ingest.py:71-76; reference §1.1)."""
    return tuple(
        hashlib.md5(part.encode("utf-8"), usedforsecurity=False).hexdigest() for part in parts
    )


def truncate(value: str, length: int) -> str:
    """Sentry's `truncatechars`: cut to `length` characters, the last three being `...`."""
    if len(value) <= length:
        return value
    return value[: length - 3] + "..."


def level_number(level: str | None) -> int | None:
    """The group's `level` column for an occurrence's level (falsy: `info`); None if unmapped."""
    return LOG_LEVELS.get(level or DEFAULT_LEVEL)


def _append(message: str, value: Any) -> str:
    text = str(value)
    if text and text not in message:
        return f"{message} {text}"
    return message


def search_message(
    event_metadata: dict[str, Any] | None,
    event_culprit: str | None,
    issue_title: str,
    subtitle: str,
    culprit: str,
) -> str:
    """`GroupEvent.search_message` of an occurrence's event (reference §1.4.2,
    eventstore/models.py:559-591): the metadata's values and the event's culprit appended when
    not already in it, stripped and cut to 8192; then `augment_message_with_occurrence` appends
    title, subtitle and culprit the same way (not stripped again). The consumer never forwards
    `logentry`, so the message starts empty."""
    message = ""
    for key, value in (event_metadata or {}).items():
        if key == "in_app_frame_mix" or isinstance(value, bool | int | float) or value is None:
            continue
        message = _append(message, value)
    if event_culprit:
        message = _append(message, event_culprit)
    message = message.strip()[:MAX_SEARCH_MESSAGE_LENGTH]
    for part in (issue_title, subtitle, culprit):
        if part:
            message = _append(message, part)
    return message


def group_message(message: str) -> str:
    """What `Group.save` stores: stripped, first line, at most 255 characters."""
    stripped = message.strip()
    first_line = stripped.splitlines()[0] if stripped else ""
    return truncate(first_line, MAX_MESSAGE_LENGTH)


def datetime_to_str(value: datetime) -> str:
    """`sentry.utils.json.datetime_to_str`: `%Y-%m-%dT%H:%M:%S.%fZ` of the UTC time."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def group_data(
    event_metadata: dict[str, Any] | None,
    issue_title: str,
    subtitle: str,
    culprit: str,
    initial_priority: int | None,
    event_datetime: datetime,
) -> dict[str, Any]:
    """The issue platform's `materialize_metadata` plus `last_received` (reference §1.4.1,
    issues/ingest.py:128-158) for a generic event: `type`, `title`, `culprit`, `metadata`,
    `location` (None for generic events) and `last_received` (the event time)."""
    metadata: dict[str, Any] = {"title": issue_title}
    metadata.update(event_metadata or {})
    metadata["title"] = issue_title
    metadata["value"] = subtitle
    metadata["initial_priority"] = initial_priority
    return {
        "type": "generic",
        "title": issue_title,
        "culprit": culprit,
        "metadata": metadata,
        "location": None,
        "last_received": datetime_to_str(event_datetime),
    }


def _is_real_title(title: Any) -> bool:
    return bool(title) and title not in PLACEHOLDER_TITLES


def updated_title(existing: Any, incoming: Any) -> Any:
    """`_get_updated_group_title` (event_manager.py:2193-2224): the incoming title when it is a
    real one or the existing one is a placeholder; else the existing one."""
    if _is_real_title(incoming) or not _is_real_title(existing):
        return incoming
    return existing


def merge_data(existing: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """An existing group's data after an occurrence (reference §1.4.8): incoming keys over
    existing ones (an existing `sdk` survives), the title chosen separately at the top and in
    `metadata`, whose keys merge the same way."""
    merged = {**existing, **incoming}
    merged["title"] = updated_title(existing.get("title"), incoming.get("title"))
    old_metadata = existing.get("metadata") or {}
    new_metadata = incoming.get("metadata") or {}
    metadata = {**old_metadata, **new_metadata}
    metadata["title"] = updated_title(old_metadata.get("title"), new_metadata.get("title"))
    merged["metadata"] = metadata
    return merged


def score(times_seen: int, last_seen: datetime) -> int:
    """`Group.get_score` (models/group.py:917-919) with UTC epoch seconds."""
    return int(math.log(max(times_seen, 1)) * 600 + int(last_seen.timestamp()))


def is_regression(status: int, active_at: datetime | None, date: datetime) -> bool:
    """Whether `_handle_regression`'s conditional update changes the group (reference §1.4.8,
    event_manager.py:2043-2182): the group is resolved, and was not made active within 5 s of
    the regression date (a NULL `active_at` passes, as Django's `exclude` lets it through).
    Resolutions in a release, pending commit resolutions, snoozes, `sentry:resolve_age` and
    plugins are not modelled: none of them has a table here."""
    if status != RESOLVED:
        return False
    return active_at is None or not active_at >= date - REGRESSION_WINDOW


def fold(row: GroupRow, occurrences: Sequence[IssueOccurrence]) -> GroupChange:
    """The group after each newly counted occurrence of the batch, in offset order, as
    `_process_existing_aggregate` would leave it (reference §1.4.8): regression first, then
    `last_seen` the latest, `first_seen` the earliest, message, level and culprit last writer
    wins (the message only when it is not a placeholder), data merged, `times_seen` + 1 each."""
    state = row
    regression: Regression | None = None
    for occurrence in occurrences:
        values = occurrence.values
        date = max(occurrence.datetime, state.last_seen)
        if is_regression(state.status, state.active_at, date):
            state = replace(
                state, status=UNRESOLVED, substatus=REGRESSED, active_at=date, last_seen=date
            )
            if regression is None:
                regression = Regression(
                    occurrence.event_id, occurrence.release_id, occurrence.release_version
                )
        message = state.message
        if values.message and values.message != message and _is_real_title(values.message):
            message = values.message
        state = replace(
            state,
            last_seen=date,
            first_seen=min(state.first_seen, occurrence.datetime),
            message=message,
            level=values.level,
            culprit=values.culprit,
            data=merge_data(state.data, values.data),
            times_seen=state.times_seen + 1,
        )
    return GroupChange(
        id=state.id,
        status=state.status,
        substatus=state.substatus,
        level=state.level,
        message=state.message,
        culprit=state.culprit,
        first_seen=state.first_seen,
        last_seen=state.last_seen,
        active_at=state.active_at,
        times_seen=state.times_seen,
        score=score(state.times_seen, state.last_seen),
        data=state.data,
        regression=regression,
    )
