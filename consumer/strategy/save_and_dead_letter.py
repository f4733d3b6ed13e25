"""`SaveAndDeadLetter`, the work of one batch, run on the save thread: save the accepted jobs
through the pipeline, dead-letter the bad messages (acknowledged by the broker), count the skipped ones. Returns only when all of that is
durable; only then may the batch's offsets be committed.

Transient failures (PostgreSQL, Redis or Kafka unavailable) retry the whole batch with
exponential backoff; every write is idempotent, so a retry that repeats work is harmless. Past
`retry_deadline` the batch fails with FatalError and the worker exits non-zero without
committing. A cancel event (set on drain or terminate) abandons the retries with `Abandoned`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import tenacity
from arroyo.types import BrokerValue

from consumer import metrics
from consumer.errors import Abandoned, FatalError, TransientError
from consumer.pipeline.job import Job
from consumer.strategy.batch import Batch
from consumer.strategy.dlq import DeadLetter, DeadLetterProducer
from consumer.strategy.guard import DeadLetterGuard
from consumer.strategy.items import Accepted, Rejected, Skipped

logger = logging.getLogger(__name__)


class Pipeline(Protocol):
    def save(self, jobs: Sequence[Job]) -> None:
        """Save the jobs, marking those not saved (`Job.outcome`). Raises TransientError."""
        ...


class SaveAndDeadLetter:
    def __init__(
        self,
        pipeline: Pipeline,
        dead_letters: DeadLetterProducer,
        guard: DeadLetterGuard,
        *,
        retry_deadline: float,
    ) -> None:
        self.pipeline = pipeline
        self.dead_letters = dead_letters
        self.guard = guard
        self.retry_deadline = retry_deadline

    def __call__(self, batch: Batch, cancel: threading.Event) -> None:
        """Save one batch; `cancel` set by the save step abandons retries (raises Abandoned)."""
        started = time.perf_counter()
        jobs: list[Job] = []
        job_values: list[BrokerValue[Accepted]] = []
        letters: list[DeadLetter] = []
        skipped: dict[str, int] = {}
        size = 0
        for value in batch:
            item = value.payload
            size += item.size
            if isinstance(item, Accepted):
                jobs.append(item.job)
                job_values.append(value)  # type: ignore[arg-type]  # narrowed by the isinstance
            elif isinstance(item, Skipped):
                skipped[item.reason] = skipped.get(item.reason, 0) + 1
            else:
                assert isinstance(item, Rejected)
                letters.append(
                    DeadLetter(
                        item.payload,
                        item.reason,
                        item.detail,
                        value.partition.topic.name,
                        value.partition.index,
                        value.offset,
                    )
                )

        guarded = False

        def attempt() -> None:
            nonlocal guarded
            self.pipeline.save(jobs)
            late = []
            for value in job_values:
                outcome = value.payload.job.outcome
                if outcome is not None and outcome.kind == "rejected":
                    late.append(
                        DeadLetter(
                            value.payload.payload,
                            outcome.reason,
                            outcome.detail,
                            value.partition.topic.name,
                            value.partition.index,
                            value.offset,
                        )
                    )
            all_letters = letters + late
            if not guarded:
                self.guard.check(len(batch) - len(all_letters), len(all_letters))
                guarded = True
            with _timed("dead_letters"):
                self.dead_letters.produce_and_wait(all_letters)

        self._retrying(attempt, cancel)

        outcomes = [job.outcome for job in jobs if job.outcome is not None]
        for outcome in outcomes:
            if outcome.kind == "skipped":
                skipped[outcome.reason] = skipped.get(outcome.reason, 0) + 1
        for reason, count in skipped.items():
            metrics.count_messages("skipped", reason, count)
        dead = [letter.reason for letter in letters] + [
            outcome.reason for outcome in outcomes if outcome.kind == "rejected"
        ]
        dead_counts = _count(dead)
        for reason, count in dead_counts.items():
            metrics.count_messages("dead_lettered", reason, count)
            metrics.DEAD_LETTERS.labels(reason).inc(count)
        if dead_counts:  # one line per batch with problems, never one per message
            logger.warning(
                "%d of %d messages dead-lettered to %s: %s",
                len(dead), len(batch), self.dead_letters.topic,
                ", ".join(f"{reason}={count}" for reason, count in sorted(dead_counts.items())),
            )  # fmt: skip
        saved = len(jobs) - len(outcomes)
        metrics.count_messages("saved", "", saved)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.BATCH_BYTES.observe(size)
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        logger.debug("batch of %d saved: %d saved, %d dead letters", len(batch), saved, len(dead))

    def _retrying(self, attempt: Callable[[], None], cancel: threading.Event) -> None:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            metrics.SAVE_FAILURES.labels("transient").inc()
            metrics.PAUSED.set(1)
            error = state.outcome.exception() if state.outcome else None
            logger.warning(
                "batch save failed (attempt %d), retrying: %s", state.attempt_number, error
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=tenacity.wait_exponential(multiplier=0.2, max=10.0) + tenacity.wait_random(0, 0.2),
            stop=tenacity.stop_after_delay(self.retry_deadline)
            | tenacity.stop_when_event_set(cancel),
            sleep=lambda seconds: _wait(cancel, seconds),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
        except TransientError as error:
            if cancel.is_set():
                raise Abandoned(f"batch abandoned while retrying: {error}") from error
            metrics.SAVE_FAILURES.labels("fatal").inc()
            raise FatalError(
                f"batch save still failing after {self.retry_deadline:.0f}s: {error}"
            ) from error
        finally:
            metrics.PAUSED.set(0)


def _wait(event: threading.Event, seconds: float) -> None:
    event.wait(seconds)


@contextmanager
def _timed(step: metrics.Step) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.observe_step(step, time.perf_counter() - started)


def _count(reasons: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return counts
