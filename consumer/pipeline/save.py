"""save_generic_events: one call per batch of Jobs (reference §2).

Walking skeleton: the nodestore write of each event and its occurrence document, in one
statement. The steps of reference §2.2 to §2.8 slot in before the write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from consumer import metrics
from consumer.pipeline.job import Job
from consumer.storage.nodestore import NodeStore, encode_blob, event_node_id, occurrence_node_id


@dataclass
class SaveContext:
    """The storage a save needs, built once per worker process."""

    nodestore: NodeStore


def save_generic_events(jobs: Sequence[Job], context: SaveContext) -> None:
    """Save a batch; when this returns, every job's documents are durable in the nodestore.

    Raises TransientError when storage is unavailable (nothing is committed by the caller).
    """
    started = time.perf_counter()
    inserted = time.time()
    level = context.nodestore.compression_level
    nodes: list[tuple[str, str]] = []
    for job in jobs:
        job.data["nodestore_insert"] = inserted
        nodes.append(
            (event_node_id(job.project_id, job.event_id), encode_blob(job.data, level=level))
        )
        nodes.append(
            (
                occurrence_node_id(job.occurrence_id, job.project_id),
                encode_blob(job.occurrence, level=level),
            )
        )
    written = context.nodestore.set_many_encoded(nodes)
    metrics.count_rows("nodestore_node", written)
    metrics.observe_step("nodestore", time.perf_counter() - started)


@dataclass
class SaveResult:
    """Jobs of a batch that were not saved, by their index in the batch: `skipped` (reason) are
    valid but deliberately not saved; `rejected` (reason, detail) go to the dead-letter topic."""

    skipped: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, tuple[str, str]] = field(default_factory=dict)


class EventSaver:
    """The save step's view of the pipeline: resolve projects, run save_generic_events."""

    def __init__(self, context: SaveContext) -> None:
        self.context = context

    def save(self, jobs: Sequence[Job]) -> SaveResult:
        if jobs:
            save_generic_events(jobs, self.context)
        return SaveResult()
