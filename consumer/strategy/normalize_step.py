"""`NormalizeStep`, the step between the buffer and the save step: `NormalizeBatch` runs Relay
over each batch before it is saved. An event Relay rejects is rejected in place, in its batch;
nothing here raises for bad data.

Why Relay runs per batch, and not per message in `Classify`: see `MessageDecoder`. Where: on
the main thread, where it overlaps with the save thread (Relay's calls release the GIL); or,
with a Relay process (`pipeline/relay_process.py`), on the normalize thread, which sends the
batch to that process and parses what comes back while the main thread polls and classifies
the next batch and the save thread saves the previous one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent import futures
from concurrent.futures import Executor, Future
from typing import Any, Protocol, cast

from arroyo.processing.strategies import MessageRejected, ProcessingStrategy
from arroyo.types import BrokerValue, FilteredPayload, Message

from consumer.errors import BadMessage
from consumer.strategy.batch import Batch, ClassifiedBatch
from consumer.strategy.classify import Decoder
from consumer.strategy.idle import IdleMonitor
from consumer.strategy.items import Accepted, Item, Pending, Rejected
from consumer.strategy.save_step import HANDOFF_WAIT

logger = logging.getLogger(__name__)


class BatchTaker(Protocol):
    """The step after `NormalizeStep`: arroyo's strategy interface over normalized batches, and
    a wait until it can take the next one (the save step, whose save thread holds one batch at
    a time)."""

    def submit(self, message: Message[Batch | FilteredPayload]) -> None: ...

    def poll(self) -> None: ...

    def close(self) -> None: ...

    def terminate(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def wait_idle(self, timeout: float) -> None: ...


class InlineExecutor(Executor):
    """An executor that runs each call at once in the caller's thread (`NormalizeStep` on the
    main thread)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - the future carries it, as a thread's would
            future.set_exception(error)
        return future


class NormalizeBatch:
    """`RunTask` function over a batch: every Pending item becomes Accepted, or Rejected when
    Relay rejects its event; the other items, and the order, are left as they are."""

    def __init__(self, decoder: Decoder, idle: IdleMonitor | None = None) -> None:
        self.decoder = decoder
        self.idle = idle

    def __call__(self, message: Message[ClassifiedBatch]) -> Batch:
        batch = message.payload
        if self.idle is not None:
            self.idle.busy()  # the batch's Relay calls take a while: that is not idle time
        try:
            results = iter(
                self.decoder.finish(
                    [
                        value.payload.prepared
                        for value in batch
                        if isinstance(value.payload, Pending)
                    ]
                )
            )
        finally:
            if self.idle is not None:
                self.idle.done()
        items: Batch = []
        for value in batch:
            classified = value.payload
            item: Item
            if isinstance(classified, Pending):
                result = next(results)
                if isinstance(result, BadMessage):
                    item = Rejected(
                        result.reason, result.detail, classified.payload, classified.size
                    )
                else:
                    item = Accepted(result, classified.payload, classified.size)
            else:
                item = classified
            items.append(BrokerValue(item, value.partition, value.offset, value.timestamp))
        return items


class NormalizeStep(ProcessingStrategy[ClassifiedBatch | FilteredPayload]):
    """Runs `NormalizeBatch` over each batch the buffer flushes, through `executor` (the
    normalize thread, or `InlineExecutor`: at once, on the main thread), and hands the result to
    the save step in order, once normalized and once the save step takes it.

    One batch at a time is being normalized or waiting for the save step. `poll` hands it over
    without waiting, so the main thread goes on polling and classifying the next batch while
    the previous one is saved; `submit`, with a batch still pending, waits a moment for it to be
    normalized and for the save step to be free, then raises MessageRejected, so the buffer
    holds (and arroyo pauses the partitions if this lasts). Measured with a Relay process:
    3,889-3,951 -> 4,017-4,094 events/s against waiting in `poll` too; two batches pending
    instead of one gained nothing and cost 20 MB.

    Not arroyo's `RunTask(better_backpressure=True)` or `RunTaskInThreads`: those forward what
    they hold only in their own `poll` and `join`, but `Buffer.join` retries its flush in a loop
    that never polls the next step, so during a rebalance or a drain they spun until the join
    timeout and left the partial batch behind. Here `submit` first tries to hand over what it
    holds, so every retry of the buffer's makes progress.

    A normalize thread is the factory's, shared by the chains of successive assignments:
    batches are normalized one at a time even when a join abandoned one, so the decoder is
    never used by two threads at once.
    """

    def __init__(self, function: NormalizeBatch, next_step: BatchTaker, executor: Executor) -> None:
        self.function = function
        self.next_step = next_step
        self._executor = executor
        self._pending: tuple[Message[ClassifiedBatch], Future[Batch]] | None = None

    def _hand_over(self, wait: float) -> None:
        """Hand the pending batch to the save step if it is normalized, waiting up to `wait`
        seconds for that and again for the save step; MessageRejected while it is busy."""
        if self._pending is None:
            return
        message, normalizing = self._pending
        if not normalizing.done():
            if wait <= 0:
                return
            futures.wait([normalizing], timeout=wait)
            if not normalizing.done():
                return
        if wait > 0:
            self.next_step.wait_idle(wait)
        # A failure of `NormalizeBatch` (a bug: it rejects bad data in place) raises here.
        self.next_step.submit(Message(message.value.replace(normalizing.result())))
        self._pending = None

    def submit(self, message: Message[ClassifiedBatch | FilteredPayload]) -> None:
        self._hand_over(HANDOFF_WAIT)
        if self._pending is not None:
            raise MessageRejected()
        if isinstance(message.payload, FilteredPayload):  # nothing pending: it overtakes nothing
            self.next_step.submit(cast(Message[FilteredPayload], message))
            return
        batch = cast(Message[ClassifiedBatch], message)
        self._pending = (batch, self._executor.submit(self.function, batch))

    def poll(self) -> None:
        self.next_step.poll()
        with contextlib.suppress(MessageRejected):
            self._hand_over(0.0)

    def close(self) -> None:
        pass  # the save step is closed by `join`, once what is pending was handed over

    def terminate(self) -> None:
        if self._pending is not None:
            self._pending[1].cancel()  # a batch already being normalized finishes, unused
            self._pending = None
        self.next_step.terminate()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending is not None and (deadline is None or time.monotonic() < deadline):
            self.next_step.poll()
            wait = (
                HANDOFF_WAIT if deadline is None else min(HANDOFF_WAIT, deadline - time.monotonic())
            )
            with contextlib.suppress(MessageRejected):
                self._hand_over(max(0.001, wait))
        if self._pending is not None:
            logger.warning(
                "a batch was still being normalized or waiting for the save step at the join "
                "deadline: not saved"
            )
            self._pending[1].cancel()
            self._pending = None
        self.next_step.close()
        self.next_step.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
