"""The decode steps, on the main thread: `Classify` turns each Kafka message into an item
before batching, `NormalizeBatch` runs Relay over each batch before it is saved.

Neither raises for bad data: a message that cannot be saved becomes `Rejected` and travels in
the batch like any other, so its offset cannot overtake unsaved messages (arroyo-notes §4.5).
An event Relay rejects is found by `NormalizeBatch` and rejected in place, in its batch.

Why Relay runs per batch, and not per message in `Classify`: see `MessageDecoder`. It still
overlaps with the save thread: `NormalizeBatch` normalizes the next batch while the save step
saves the previous one (the Relay call is a C call that releases the GIL), and holds it until
the save step takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from arroyo.backends.kafka import KafkaPayload
from arroyo.types import BrokerValue, Message

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
        pending = [value.payload for value in batch if isinstance(value.payload, Pending)]
        results = iter(self.decoder.finish([item.prepared for item in pending]))
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
