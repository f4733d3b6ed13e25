"""The nodestore write (reference §2.9 and §2.10, CONTRACT §4): every event and every occurrence
document of the batch in one batched upsert.

`nodestore_insert` (the same epoch float for the whole batch, as Sentry computes it once per
batch) is added to each event last, after `bytes.stored.event` was measured; the event is final
from then on and encoded once (`Job.nodes`), so a retried save writes the same rows again. The
occurrence document (`occurrence.py`) was encoded once when it was decoded; a buffered-spans
job writes that document only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from consumer import metrics
from consumer.pipeline.event_metrics import STORED_SIZE
from consumer.storage.nodestore import Compression, encode_blob, event_node_id, occurrence_node_id

if TYPE_CHECKING:
    from consumer.pipeline.job import Job
    from consumer.pipeline.storage_api import StorageAPI


_STORED_SIZE_KEY = orjson.dumps(STORED_SIZE) + b":"


def event_document(job: Job, inserted: float) -> Any:
    """The event as stored, after adding `nodestore_insert`: its JSON completed from what the
    event metrics step measured when possible, else the event itself (encoded again)."""
    data = job.data
    data["nodestore_insert"] = inserted
    head = job.event_json_head
    if head is None:
        return data
    size = data["_metrics"][STORED_SIZE]
    return orjson.Fragment(
        b"".join(
            (
                head,
                _STORED_SIZE_KEY,
                str(size).encode(),
                b'},"nodestore_insert":',
                orjson.dumps(inserted),
                b"}",
            )
        )
    )


def _occurrence_node(job: Job, compression: Compression) -> tuple[str, str]:
    return (
        occurrence_node_id(job.occurrence_id, job.project_id),
        encode_blob(orjson.Fragment(job.occurrence_json), compression=compression),
    )


def encode_nodes(jobs: Sequence[Job], inserted: float, compression: Compression) -> None:
    for job in jobs:
        document = event_document(job, inserted)
        job.nodes = (
            (
                event_node_id(job.project_id, job.event_id),
                encode_blob(document, compression=compression),
            ),
            _occurrence_node(job, compression),
        )


def encode_occurrence_nodes(jobs: Sequence[Job], compression: Compression) -> None:
    """The occurrence document alone, for buffered-spans jobs (Sentry saves no event there)."""
    for job in jobs:
        job.nodes = (_occurrence_node(job, compression),)


def write_nodes(jobs: Sequence[Job], storage: StorageAPI) -> None:
    """Write the encoded rows of every job (all encoded). Durable when it returns; raises
    TransientError, and nothing of the batch may be committed then."""
    if any(job.nodes is None for job in jobs):
        raise ValueError("write_nodes: every job must be encoded first")
    rows = [node for job in jobs if job.nodes is not None for node in job.nodes]
    if rows:
        metrics.count_rows("nodestore_node", storage.nodestore.set_many_encoded(rows))
        observe_event_ages([job for job in jobs if not job.buffered], time.time())


def received_epoch(received: Any) -> float | None:
    """Epoch seconds of an event's `received` (a number or an ISO 8601 date, UTC when it says
    no zone), None when it is neither."""
    if isinstance(received, int | float) and not isinstance(received, bool):
        return float(received)
    if isinstance(received, str):
        try:
            moment = datetime.fromisoformat(received)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None


def observe_event_ages(jobs: Sequence[Job], now: float) -> None:
    """Event age at save: now minus the time the event was received, per saved event."""
    for job in jobs:
        received = received_epoch(job.received)
        if received is not None:
            metrics.EVENT_AGE.observe(max(0.0, now - received))


def inserted_now() -> float:
    """`nodestore_insert`: the current UTC epoch seconds."""
    return time.time()
