"""`Classify`, the first step of the chain (a `RunTask` function on the main thread): each Kafka
message becomes an item before batching, `Pending` (to be normalized and saved), `Skipped` or
`Rejected`. It never raises for bad data: a message that cannot be saved becomes `Rejected` and
travels in its batch like any other, so its offset cannot overtake unsaved messages
(arroyo-notes §4.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from arroyo.backends.kafka import KafkaPayload
from arroyo.types import Message

from consumer.errors import BadMessage
from consumer.pipeline.job import Job
from consumer.pipeline.message import Prepared, Skip
from consumer.reader import UnreadablePayload
from consumer.strategy.idle import IdleMonitor
from consumer.strategy.items import Classified, Pending, Rejected, Skipped


class Decoder(Protocol):
    """`MessageDecoder`'s two halves: `prepare` on the main thread, `finish` on the main or the
    normalize thread, each on one thread at a time."""

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
        if isinstance(payload, UnreadablePayload):  # its dead letter: null, the detail says why
            return Rejected("unreadable", payload.detail, KafkaPayload(None, None, []), 0)  # type: ignore[arg-type]
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
