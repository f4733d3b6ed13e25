"""The batch buffer: flush at `max_messages`, at `max_bytes`, or `max_time` after the first
message of the batch arrived.

arroyo's `BatchStep` counts either messages or bytes, not both, and starts its clock when the
previous batch was flushed, so the first message after an idle spell is flushed alone. This
buffer plugs into arroyo's `Buffer` strategy (which tracks the offsets) and fixes both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from arroyo.types import BaseValue, BrokerValue

from consumer.strategy.items import Classified, Item

# The batch step only ever sees messages straight from Kafka, so every value is a BrokerValue:
# a batch as the decode step classified it, and as the normalize step hands it to the save step.
ClassifiedBatch = list[BrokerValue[Classified]]
Batch = list[BrokerValue[Item]]


class BatchBuffer:
    def __init__(
        self,
        max_messages: int,
        max_bytes: int,
        max_time: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_time = max_time
        self.clock = clock
        self._items: ClassifiedBatch = []
        self._bytes = 0
        self._deadline: float | None = None

    @property
    def buffer(self) -> ClassifiedBatch:
        return self._items

    @property
    def is_empty(self) -> bool:
        return not self._items

    @property
    def is_ready(self) -> bool:
        return bool(self._items) and self.readiness_reason != ""

    @property
    def readiness_reason(self) -> str:
        if len(self._items) >= self.max_messages:
            return "size"
        if self._bytes >= self.max_bytes:
            return "bytes"
        if self._deadline is not None and self.clock() >= self._deadline:
            return "time"
        return ""

    def append(self, message: BaseValue[Classified]) -> None:
        if self._deadline is None:
            self._deadline = self.clock() + self.max_time
        assert isinstance(message, BrokerValue)
        self._items.append(message)
        self._bytes += message.payload.size

    def new(self) -> BatchBuffer:
        return BatchBuffer(self.max_messages, self.max_bytes, self.max_time, self.clock)
