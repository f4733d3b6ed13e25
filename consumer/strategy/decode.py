"""The decode step: turn each Kafka message into an Item, on the main thread, before batching.

Never raises for bad data: a message that cannot be saved becomes `Rejected` and travels in the
batch like any other, so its offset cannot overtake unsaved messages (arroyo-notes §4.5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from arroyo.backends.kafka import KafkaPayload
from arroyo.types import Message

from consumer.errors import BadMessage
from consumer.pipeline.job import Job
from consumer.pipeline.message import Skip
from consumer.strategy.idle import IdleMonitor
from consumer.strategy.items import Accepted, Item, Rejected, Skipped

logger = logging.getLogger(__name__)

Decoder = Callable[[bytes | None], Job | Skip]


class Classify:
    """`RunTask` function: KafkaPayload → Accepted | Skipped | Rejected."""

    def __init__(
        self, decoder: Decoder, max_message_bytes: int, idle: IdleMonitor | None = None
    ) -> None:
        self.decoder = decoder
        self.max_message_bytes = max_message_bytes
        self.idle = idle

    def __call__(self, message: Message[KafkaPayload]) -> Item:
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
            result = self.decoder(value)
        except BadMessage as bad:
            return Rejected(bad.reason, bad.detail, payload, size)
        except RecursionError:
            return Rejected(
                "too_deeply_nested", "the message nests too deeply to process", payload, size
            )
        if isinstance(result, Skip):
            return Skipped(result.reason, size)
        return Accepted(result, payload, size)
