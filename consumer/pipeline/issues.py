"""save_issue_occurrences: the groups of a batch's saved occurrences (reference
sentry-issue-platform.md §1.4 and §1.5), after save_generic_events made their events durable.

Each job becomes an IssueOccurrence (its hashed fingerprint and the group columns it sets),
then one storage call finds or creates every group of the batch, counts the occurrences not
counted before, regresses resolved groups and writes the environment and release rows, in one
transaction (`StorageAPI.save_groups`). The rules themselves are in `groups.py`.

A job whose occurrence cannot make a group is rejected (dead-lettered) with its reason,
never failing the batch: an empty fingerprint (`empty_fingerprint`; Sentry fails on
`fingerprint[0]`) or a level outside Sentry's map that Relay's normalized event level does
not repair either (`invalid_level`; Sentry fails the insert, reference §8 P3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from consumer.pipeline.groups import (
    DEFAULT_PRIORITY,
    MAX_CULPRIT_LENGTH,
    fold,
    group_data,
    group_message,
    level_number,
    search_message,
    truncate,
)
from consumer.pipeline.job import Job
from consumer.pipeline.storage_api import StorageAPI
from consumer.storage.models import GroupValues, IssueOccurrence, Project

# What the group's `priority` column (a PostgreSQL integer) holds.
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1


def issue_occurrence(job: Job, project: Project) -> IssueOccurrence | None:
    """The occurrence of a saved job as grouping sees it; None (and the job rejected) when it
    cannot make a group. The job's occurrence document is Sentry's `IssueOccurrence.to_dict()`
    (occurrence.py): its fingerprint already hashed (reference §1.1), its level and culprit
    defaulted, its priority the occurrence's or the group type's default."""
    document: dict[str, Any] = orjson.loads(job.occurrence_json)
    hashes = tuple(document.get("fingerprint") or ())
    if not hashes:
        job.reject("empty_fingerprint", "the occurrence has no fingerprint to group by")
        return None
    level = level_number(document.get("level"))
    if level is None:
        level = level_number(job.level)
    if level is None:
        job.reject("invalid_level", f"level {str(document.get('level'))[:32]!r} is not a level")
        return None
    assert job.datetime is not None  # pulled out by save_generic_events
    title = document.get("issue_title") or ""
    subtitle = document.get("subtitle") or ""
    culprit = truncate(document.get("culprit") or "", MAX_CULPRIT_LENGTH)
    priority = document.get("initial_issue_priority")
    if priority is None:  # the document always has one; kept for documents of older versions
        priority = DEFAULT_PRIORITY
    if not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        # Sentry's insert of such a group fails and the message is lost: a dead letter here.
        job.reject("invalid_field", f"initial_issue_priority {str(priority)[:32]} is out of range")
        return None
    event_metadata = job.data.get("metadata")
    return IssueOccurrence(
        project_id=job.project_id,
        organization_id=project.organization_id,
        occurrence_id=job.occurrence_id,
        event_id=job.event_id,
        hashes=hashes,
        datetime=job.datetime,
        values=GroupValues(
            level=level,
            message=group_message(
                search_message(event_metadata, job.data.get("culprit"), title, subtitle, culprit)
            ),
            culprit=culprit,
            platform=job.data.get("platform"),
            type=int(document["type"]),
            priority=priority,
            data=group_data(event_metadata, title, subtitle, culprit, priority, job.datetime),
        ),
        release_id=job.release_id,
        release_version=job.release,
        environment_id=job.environment_id,
        environment_name=job.environment or "",
    )


def save_issue_occurrences(
    jobs: Sequence[Job], projects: Mapping[int, Project], storage: StorageAPI
) -> None:
    """Group every job without an outcome (saved by save_generic_events); sets `job.group`.

    Raises TransientError when PostgreSQL is unavailable: the whole transaction rolled back,
    the batch is retried, and nothing was counted."""
    grouped: list[tuple[Job, IssueOccurrence]] = []
    for job in jobs:
        if job.outcome is not None or job.buffered:  # buffered spans: not grouped yet
            continue
        occurrence = issue_occurrence(job, projects[job.project_id])
        if occurrence is not None:
            grouped.append((job, occurrence))
    if not grouped:
        return
    infos = storage.save_groups([occurrence for _, occurrence in grouped], fold)
    for job, occurrence in grouped:
        job.group = infos.get((occurrence.project_id, occurrence.occurrence_id))
