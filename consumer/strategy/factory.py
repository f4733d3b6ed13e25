"""Builds the processing chain for each assignment, inside out (arroyo-notes §5.1):

    Healthcheck (optional: touches a file a supervisor can probe)
      → RunTask(Classify)                 decode and classify on the main thread; never raises
        → Buffer(BatchBuffer)             batch by count, bytes and time
          → NormalizeStep                 Relay over the batch (main or own thread); never raises
            → SaveStep(SaveAndDeadLetter) save + dead letters on a background thread
              → CommitOffsets             commit last, after the save returned

The factory owns what lives across assignments (the batch's save, its pools and producer, the
normalize thread); a fresh chain is built on every (re)assignment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor

from arroyo.backends.kafka import KafkaPayload
from arroyo.processing.strategies import (
    CommitOffsets,
    Healthcheck,
    ProcessingStrategy,
    ProcessingStrategyFactory,
    RunTask,
)
from arroyo.processing.strategies.buffer import Buffer
from arroyo.types import Commit, Partition

from consumer.settings import WorkerSettings
from consumer.strategy.batch import BatchBuffer, ClassifiedBatch
from consumer.strategy.classify import Classify
from consumer.strategy.idle import IdleMonitor
from consumer.strategy.items import Classified
from consumer.strategy.normalize_step import InlineExecutor, NormalizeBatch, NormalizeStep
from consumer.strategy.save_step import SaveStep

SaveBatch = Callable[..., None]


class StrategyFactory(ProcessingStrategyFactory[KafkaPayload]):
    def __init__(
        self,
        classify: Classify,
        save_batch: SaveBatch,
        worker: WorkerSettings,
        *,
        idle: IdleMonitor | None = None,
        on_shutdown: Callable[[], None] | None = None,
        wrap_commit: Callable[[Commit], Commit] | None = None,
        normalize_thread: bool = False,
    ) -> None:
        """`normalize_thread`: run `NormalizeBatch` on a thread of its own (when Relay's calls
        are made in a Relay process), not on the main thread."""
        self.classify = classify
        self.save_batch = save_batch
        self.worker = worker
        self.idle = idle
        self.on_shutdown = on_shutdown
        self.wrap_commit = wrap_commit
        self.assignments: list[frozenset[Partition]] = []  # every assignment seen, in order
        self._normalizing: Executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="normalize")
            if normalize_thread
            else InlineExecutor()
        )

    def create_with_partitions(
        self, commit: Commit, partitions: Mapping[Partition, int]
    ) -> ProcessingStrategy[KafkaPayload]:
        self.assignments.append(frozenset(partitions))
        if self.wrap_commit is not None:
            commit = self.wrap_commit(commit)
        if self.idle is not None:
            self.idle.assigned()
        save = SaveStep(self.save_batch, CommitOffsets(commit), self.idle)
        normalize = NormalizeStep(
            NormalizeBatch(self.classify.decoder, self.idle), save, self._normalizing
        )
        batch: Buffer[Classified, ClassifiedBatch] = Buffer(
            BatchBuffer(
                max_messages=self.worker.batch_size,
                max_bytes=self.worker.batch_bytes,
                max_time=self.worker.batch_time_ms / 1000,
            ),
            normalize,
        )
        chain: ProcessingStrategy[KafkaPayload] = RunTask(
            self.classify, batch, better_backpressure=True
        )
        if self.worker.healthcheck_file:
            chain = Healthcheck(self.worker.healthcheck_file, chain)
        return chain

    def shutdown(self) -> None:
        # A batch still being normalized (a chain terminated mid-batch) finishes first: the
        # thread must not outlive the resources, nor run Relay while the process exits.
        self._normalizing.shutdown(wait=True, cancel_futures=True)
        if self.on_shutdown is not None:
            self.on_shutdown()
