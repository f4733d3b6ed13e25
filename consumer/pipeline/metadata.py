"""Event metadata, title, culprit and location (reference §2.6, Sentry's
`_materialize_metadata_many`). Pure.

For a generic event the event type's own metadata is empty, plus the event's `title` when it has
one; the event's `metadata` is merged over it (None is ignored, as Sentry logs and ignores the
TypeError). The title is `metadata["title"]`, else "<untitled>"; the location is always None.
`data` receives `type`, `culprit`, `metadata`, `title` and `location` in that order (keys it
already has keep their place).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consumer.pipeline.culprit import get_culprit

if TYPE_CHECKING:
    from consumer.pipeline.job import Job

EVENT_TYPE = "generic"
UNTITLED = "<untitled>"


def apply_metadata(jobs: Sequence[Job]) -> None:
    """Raises ValueError (or TypeError for a non-iterable other than None) like Python's
    `dict.update` when an event's `metadata` is neither a mapping nor pairs; Relay never
    produces those."""
    for job in jobs:
        data = job.data
        # `GenericEvent.get_metadata`: nothing extracted, plus the event's own title if any.
        title = data.get("title")
        event_metadata: dict[str, Any] = {} if title is None else {"title": title}
        job.event_metadata = dict(event_metadata)
        extra = data.get("metadata", {})
        if extra is not None:
            event_metadata.update(extra)
        title = event_metadata.get("title")
        job.culprit = culprit = get_culprit(data)
        data["type"] = EVENT_TYPE
        data["culprit"] = culprit
        data["metadata"] = event_metadata
        data["title"] = title if title is not None else UNTITLED
        data["location"] = None
