"""Event metrics (reference §2.8, Sentry's `_materialize_event_metrics`). Pure but for counting.

`_metrics` is ensured on the event, then `bytes.stored.event` = the number of *characters* of
the event's compact JSON at that moment (with `_metrics` present, before this key and before
`nodestore_insert` exist). Events flagged `flag.processing.error` / `.fatal` are counted.

Measuring needs the event's JSON, which is almost the document the nodestore stores: only
`bytes.stored.event` and `nodestore_insert` are still to come, both at the very end of it in
the usual case (`_metrics` new, hence the event's last key). The JSON is then kept on the job
(`Job.event_json_head`) and the nodestore step appends the two values instead of encoding the
whole event again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from consumer import metrics

if TYPE_CHECKING:
    from consumer.pipeline.job import Job

STORED_SIZE = "bytes.stored.event"
PROCESSING_FLAGS = ("flag.processing.error", "flag.processing.fatal")


def ensure_metrics(data: dict[str, Any]) -> dict[str, Any]:
    event_metrics = data.get("_metrics") or {}
    data["_metrics"] = event_metrics
    return event_metrics


def stored_size(encoded: bytes) -> int:
    """Characters (not bytes) of UTF-8 JSON, as Sentry measures it."""
    return len(encoded) if encoded.isascii() else len(encoded.decode())


def measure(job: Job) -> dict[str, Any]:
    data = job.data
    event_metrics = ensure_metrics(data)
    appendable = STORED_SIZE not in event_metrics and next(reversed(data)) == "_metrics"
    empty = not event_metrics
    encoded = orjson.dumps(data)
    event_metrics[STORED_SIZE] = stored_size(encoded)
    # Without the closing "}}" of `_metrics` and of the event, ready for the last two values.
    job.event_json_head = (encoded[:-2] if empty else encoded[:-2] + b",") if appendable else None
    return event_metrics


def apply_event_metrics(jobs: Sequence[Job]) -> None:
    flagged = dict.fromkeys(PROCESSING_FLAGS, 0)
    for job in jobs:
        event_metrics = measure(job)
        for flag in PROCESSING_FLAGS:
            if event_metrics.get(flag):
                flagged[flag] += 1
        job.event_metrics = event_metrics
    for flag, count in flagged.items():
        if count:
            metrics.EVENT_PROCESSING_FLAGS.labels(flag).inc(count)
