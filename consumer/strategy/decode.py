"""The decode steps, on the main thread: `Classify` turns each Kafka message into an item
before batching, `NormalizeBatch` runs Relay over each batch before it is saved.

Neither raises for bad data: a message that cannot be saved becomes `Rejected` and travels in
the batch like any other, so its offset cannot overtake unsaved messages (arroyo-notes §4.5).
An event Relay rejects is found by `NormalizeBatch` and rejected in place, in its batch.

Why Relay runs per batch, and not per message in `Classify`: see `MessageDecoder`. It still
overlaps with the save thread: `NormalizeStep` normalizes the next batch while the save step
saves the previous one (the Relay call is a C call that releases the GIL), and holds it until
the save step takes it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol, cast

from arroyo.backends.kafka import KafkaPayload
from arroyo.processing.strategies import MessageRejected, ProcessingStrategy
from arroyo.types import BrokerValue, FilteredPayload, Message

from consumer.errors import BadMessage
from consumer.pipeline.job import Job
from consumer.pipeline.message import Prepared, Skip
from consumer.strategy.batch import Batch, ClassifiedBatch
from consumer.strategy.idle import IdleMonitor
from consumer.strategy.items import Accepted, Classified, Item, Pending, Rejected, Skipped

logger = logging.getLogger(__name__)


class Decoder(Protocol):
    """`MessageDecoder`'s two halves (one decoder, used on the main thread only)."""

    def prepare(self, value: bytes | None) -> Prepared | Skip: ...

    def finish(self, batch: Sequence[Prepared]) -> list[Job | BadMessage]: ...


class Classify:
    """`RunTask` function: KafkaPayload → Pending | Skipped | Rejected."""

    def __init__(
        self, decoder: Decoder, max_message_bytes: int, idle: IdleMonitor | None = None
    ) -> None:
        self.decoder = decoder
        self.max_message_bytes = max_message_bytes
        self.idle = idle

    def __call__(self, message: Message[KafkaPayload]) -> Classified:
        if self.idle is not None:
            self.idle.touch()
        payload = message.payload
        value = payload.value
        size = len(value) if value is not None else 0
        if size > self.max_message_bytes:
            return Rejected(
                "message_too_large", f"{size} bytes > {self.max_message_bytes}", payload, size
            )
        try:
            result = self.decoder.prepare(value)
        except BadMessage as bad:
            return Rejected(bad.reason, bad.detail, payload, size)
        except RecursionError:
            return Rejected(
                "too_deeply_nested", "the message nests too deeply to process", payload, size
            )
        if isinstance(result, Skip):
            return Skipped(result.reason, size)
        return Pending(result, payload, size)


class NormalizeBatch:
    """`RunTask` function over a batch: every Pending item becomes Accepted, or Rejected when
    Relay rejects its event; the other items, and the order, are left as they are."""

    def __init__(self, decoder: Decoder, idle: IdleMonitor | None = None) -> None:
        self.decoder = decoder
        self.idle = idle

    def __call__(self, message: Message[ClassifiedBatch]) -> Batch:
        batch = message.payload
        results = iter(
            self.decoder.finish(
                [value.payload.prepared for value in batch if isinstance(value.payload, Pending)]
            )
        )
        if self.idle is not None:
            self.idle.touch()  # the batch's Relay calls took a while: that was not idle time
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
    """Runs `NormalizeBatch` over each batch the buffer flushes and hands the result to the save
    step, holding it while the save step is busy (it is not normalized again).

    Not arroyo's `RunTask(better_backpressure=True)`: that one rejects a batch while it holds the
    previous one and forwards what it holds only in its own `poll` and `join`, but `Buffer.join`
    retries its flush in a loop that never polls the next step, so during a rebalance or a drain
    it spun until the join timeout and left the partial batch behind. Here `submit` first tries
    to hand over what it holds (the save step's `submit` waits a moment for its save), so every
    retry of the buffer's makes progress.
    """

    def __init__(
        self, function: NormalizeBatch, next_step: ProcessingStrategy[Batch | FilteredPayload]
    ) -> None:
        self.function = function
        self.next_step = next_step
        self._held: Message[Batch] | None = None

    def _hand_over(self) -> None:
        if self._held is not None:
            self.next_step.submit(self._held)  # MessageRejected: still held
            self._held = None

    def submit(self, message: Message[ClassifiedBatch | FilteredPayload]) -> None:
        self._hand_over()
        if isinstance(message.payload, FilteredPayload):
            self.next_step.submit(cast(Message[FilteredPayload], message))
            return
        batch = cast(Message[ClassifiedBatch], message)
        normalized = Message(batch.value.replace(self.function(batch)))
        try:
            self.next_step.submit(normalized)
        except MessageRejected:
            self._held = normalized

    def poll(self) -> None:
        self.next_step.poll()
        with contextlib.suppress(MessageRejected):
            self._hand_over()

    def close(self) -> None:
        pass  # the save step is closed by `join`, once what is held was handed over

    def terminate(self) -> None:
        self._held = None
        self.next_step.terminate()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._held is not None and (deadline is None or time.monotonic() < deadline):
            self.next_step.poll()
            with contextlib.suppress(MessageRejected):
                self._hand_over()
        if self._held is not None:
            logger.warning("a normalized batch was still waiting at the join deadline: not saved")
            self._held = None
        self.next_step.close()
        self.next_step.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
