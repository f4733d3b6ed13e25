"""Dead letters: the original key, value and headers of a bad message, on the dead-letter topic,
with headers naming the reason and the origin (CONTRACT §6).

`produce_and_wait` returns only once the broker has acknowledged every dead letter (acks=all);
a failed delivery raises TransientError, so the batch, and its offsets, wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from arroyo.backends.kafka import KafkaPayload
from confluent_kafka import KafkaError, Producer

from consumer.errors import TransientError

logger = logging.getLogger(__name__)

HEADER_REASON = "reason"
HEADER_DETAIL = "reason_detail"
HEADER_TOPIC = "original_topic"
HEADER_PARTITION = "original_partition"
HEADER_OFFSET = "original_offset"
DLQ_HEADERS = frozenset(
    {HEADER_REASON, HEADER_DETAIL, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET}
)
MAX_DETAIL = 512

# Reasons that a replay can fix (the data was fine, the world was not ready for it).
REPLAYABLE_REASONS = frozenset({"unknown_project", "unknown_organization"})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    payload: KafkaPayload
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        own: list[tuple[str, str | bytes | None]] = [
            (key, value) for key, value in self.payload.headers if key not in DLQ_HEADERS
        ]
        return [
            *own,
            (HEADER_REASON, self.reason.encode()),
            (HEADER_DETAIL, self.detail[:MAX_DETAIL].encode("utf-8", "replace")),
            (HEADER_TOPIC, self.topic.encode()),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
        ]


class DeadLetterProducer:
    def __init__(self, client_config: dict[str, str], topic: str, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._producer = Producer(
            {
                **client_config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": 10 * 1024 * 1024,
                "message.timeout.ms": int(timeout * 1000),
            }
        )

    def produce_and_wait(self, letters: Sequence[DeadLetter]) -> None:
        """Produce every dead letter and wait for the broker's acknowledgement of each."""
        if not letters:
            return
        errors: list[str] = []

        def delivered(error: KafkaError | None, _message: object) -> None:
            if error is not None:
                errors.append(str(error))

        for letter in letters:
            while True:
                try:
                    self._producer.produce(
                        self.topic,
                        value=letter.payload.value,
                        key=letter.payload.key,
                        headers=letter.headers(),
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)
        deadline = time.monotonic() + self.timeout
        while (remaining := self._producer.flush(max(0.0, deadline - time.monotonic()))) > 0:
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"dead-letter topic {self.topic}: {remaining} deliveries not acknowledged"
                )
        if errors:
            raise TransientError(f"dead-letter topic {self.topic}: delivery failed: {errors[0]}")

    def close(self) -> None:
        self._producer.flush(self.timeout)
