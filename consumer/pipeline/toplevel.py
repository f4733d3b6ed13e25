"""The event's top-level attributes, pulled out onto the Job (reference §2.0, Sentry's
`_pull_out_data`). Pure.

Release, dist, environment, level, logger and transaction are copied onto the job; the event
gets a `tags` list if it has none (and the job its `EventTags`, through which every later step
edits them), the `level` tag always (a None level only removes it), and
`logger`, `environment` and `transaction` tags when they are non-empty. The event time is the
normalized `timestamp` read as UTC seconds, whatever the host's time zone (CONTRACT §9.4).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from consumer.pipeline.tags import EventTags

if TYPE_CHECKING:
    from consumer.pipeline.job import Job


def event_datetime(timestamp: Any) -> datetime:
    """The event time, timezone-aware UTC. Relay always leaves a numeric `timestamp`."""
    return datetime.fromtimestamp(float(timestamp), UTC)


def pull_out(job: Job) -> None:
    """Once per job (`job.pulled`): tags are moved, not only set, so twice would reorder them."""
    if job.pulled:
        return
    job.pulled = True
    data = job.data
    transaction = data.get("transaction")
    if transaction and not isinstance(transaction, str):
        transaction = str(transaction)
    job.transaction = transaction
    job.logger_name = logger_name = data.get("logger")
    job.level = level = data.get("level")
    job.release = data.get("release")
    job.dist = data.get("dist")
    job.environment = environment = data.get("environment")
    job.datetime = event_datetime(data["timestamp"])

    pairs = data.get("tags")
    if pairs is None:
        pairs = data["tags"] = []
    job.tags = tags = EventTags(pairs)
    changes = {"level": level}
    if logger_name:
        changes["logger"] = logger_name
    if environment:
        changes["environment"] = environment
    if transaction:
        changes["transaction"] = transaction
    tags.update(changes)
    # What EventManager.save sets before calling save_generic_events (Relay set it already).
    data["project"] = job.project_id
