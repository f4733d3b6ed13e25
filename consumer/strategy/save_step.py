"""The save step: runs each batch on one background thread, so the main thread keeps polling
Kafka (heartbeats, rebalances and the healthcheck are served during slow saves), and forwards
a batch's offsets to the commit step only after its save returned.

One batch is saved at a time, in order; while it is in flight `submit` raises MessageRejected,
so the batch step holds (and keeps filling) the next batch, and arroyo pauses the partitions if
the save takes longer than its backpressure threshold.

Unlike arroyo's `RunTaskInThreads`, `join(timeout)` keeps its deadline: a batch still in flight
when it passes is abandoned (its retries cancelled) and its offsets are not committed; the
writes it made are idempotent and will be redone by whoever reads those messages next.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from arroyo.processing.strategies import MessageRejected, ProcessingStrategy
from arroyo.types import FilteredPayload, Message

from consumer.errors import Abandoned
from consumer.strategy.batch import Batch
from consumer.strategy.idle import IdleMonitor

logger = logging.getLogger(__name__)

# After a join deadline, how long an abandoned save may take to notice its cancellation.
ABANDON_GRACE = 5.0
# How long the normalize step may block the poll loop waiting for the batch in flight, when it
# has nowhere to put the next one (well under any heartbeat or poll interval). Bouncing straight
# back instead would cost arroyo's 10 ms sleep after a rejection.
HANDOFF_WAIT = 0.05


class SaveStep(ProcessingStrategy[Batch | FilteredPayload]):
    def __init__(
        self,
        save: Callable[[Batch, threading.Event], None],
        next_step: ProcessingStrategy[Any],
        idle: IdleMonitor | None = None,
    ) -> None:
        self._save = save
        self._next = next_step
        self._cancel = threading.Event()  # per strategy instance: set to abandon its save
        self._idle = idle
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="save")
        self._in_flight: tuple[Message[Batch], Future[None]] | None = None
        self._closed = False

    def _run(self, batch: Batch) -> None:
        try:
            self._save(batch, self._cancel)
        finally:
            if self._idle is not None:
                self._idle.done()

    def wait_idle(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the batch in flight to be saved (the normalize step
        does before a `submit` it would otherwise retry at once)."""
        if self._in_flight is not None:
            futures.wait([self._in_flight[1]], timeout=timeout)

    def submit(self, message: Message[Batch | FilteredPayload]) -> None:
        """Start saving the batch; MessageRejected at once while one is in flight."""
        assert not self._closed
        self._forward_done()
        if self._in_flight is not None:
            raise MessageRejected()
        if isinstance(message.payload, FilteredPayload):
            self._next.submit(message)
            return
        if self._idle is not None:
            self._idle.busy()
        batch_message: Message[Batch] = message  # type: ignore[assignment]
        self._in_flight = (batch_message, self._executor.submit(self._run, batch_message.payload))

    def _forward_done(self) -> None:
        """Forward the in-flight batch's offsets if its save finished; re-raise its failure."""
        if self._in_flight is None:
            return
        message, future = self._in_flight
        if not future.done():
            return
        self._in_flight = None
        future.result()  # raises the save's exception: the processor stops without committing
        self._next.submit(message.replace(None))

    def poll(self) -> None:
        self._forward_done()
        self._next.poll()

    def close(self) -> None:
        self._closed = True

    def terminate(self) -> None:
        self._closed = True
        self._cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._next.terminate()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._in_flight is not None:
            message, future = self._in_flight
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                future.result(timeout=remaining)
            except TimeoutError:
                logger.warning(
                    "save still running at the join deadline: abandoning it, not committing its offsets"
                )
                self._cancel.set()
                with contextlib.suppress(TimeoutError, Abandoned):
                    future.result(timeout=ABANDON_GRACE)
                self._in_flight = None
            except Abandoned:
                self._in_flight = None
            else:
                self._in_flight = None
                self._next.submit(message.replace(None))
        self._executor.shutdown(wait=False)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._next.close()
        self._next.join(remaining)
