"""The Kafka consumer the worker polls: arroyo's, plus the two kinds of record arroyo cannot
hand over as they are.

* A record the consumer cannot read (librdkafka cannot decompress it within
  `receive.message.max.bytes`, or finds it corrupt): arroyo raises ConsumerError on every poll,
  and a worker that stops on it never gets past it. Here the unreadable record batch is measured
  (`_last_unreadable`), skipped, and handed over as one stand-in message at its last offset whose
  payload is an `UnreadablePayload` naming the offsets and the error: it travels in its batch
  like any message, is dead-lettered as `unreadable`, and its offset is committed only with the
  messages before it (those, in the same fetch, are saved as usual).
* A tombstone (a record with a null value): arroyo hands it over with the value `b""`; here it
  keeps its null value, so its dead letter is a tombstone too.

Errors that are not about one record (a broker down, an offset out of range) raise as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from arroyo.backends.kafka import KafkaConsumer, KafkaPayload
from arroyo.types import BrokerValue
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, Message, TopicPartition

logger = logging.getLogger(__name__)

# librdkafka's errors about one record batch: it cannot be decompressed (or not within
# receive.message.max.bytes), or it is corrupt (CRC, framing), or the broker says so.
UNREADABLE_ERRORS = frozenset(
    {
        KafkaError._BAD_COMPRESSION,
        KafkaError._BAD_MSG,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.MSG_SIZE_TOO_LARGE,
    }
)
# How long one look at an offset may wait for its fetch.
PROBE_TIMEOUT = 10.0


class UnreadablePayload(KafkaPayload):
    """Stands in for a record batch the consumer could not read. Its type is the mark (a header
    can be forged, a type cannot); its only header is `(offsets, error)` for the dead letter."""

    __slots__ = ()

    @property
    def detail(self) -> str:
        name, error = self.headers[0]
        return f"offsets {name} could not be read: {error!r}"


class _StandIn:
    """The shape of a confluent-kafka message that arroyo reads, at one offset, value empty."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> None:
        return None

    def value(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (TIMESTAMP_NOT_AVAILABLE, int(time.time() * 1000))


class _Records:
    """Wraps the confluent-kafka consumer arroyo polls: notes tombstones, and replaces an
    unreadable record batch by a stand-in at its last offset after seeking past it."""

    def __init__(self, inner: Consumer, configuration: Mapping[str, Any]) -> None:
        self._inner = inner
        self._configuration = configuration
        # (topic, partition, offset) → what the stand-in or tombstone there is.
        self.marks: dict[tuple[str, int, int], tuple[str, str] | None] = {}
        self._skipped: dict[tuple[str, int], int] = {}  # partition → last offset skipped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def poll(self, *args: Any) -> Message[Any, Any] | _StandIn | None:
        message = self._inner.poll(*args)
        if message is None:
            return None
        error = message.error()
        if error is None:
            if message.value() is None:
                self.marks[_where(message)] = None
            return message
        topic, partition, base = message.topic(), message.partition(), message.offset()
        if (
            error.code() not in UNREADABLE_ERRORS
            or topic is None
            or partition is None
            or base is None
            or base < 0
        ):
            return message  # arroyo raises it, as before
        skipped = self._skipped.get((topic, partition), -1)
        end = self._last_unreadable(topic, partition, base, max(base, skipped))
        self._inner.seek(TopicPartition(topic, partition, max(end, skipped) + 1))
        if end <= skipped:
            return None  # fetched before the seek past it: already handed over
        self._skipped[(topic, partition)] = end
        first = max(base, skipped + 1)
        offsets = str(first) if first == end else f"{first}..{end}"
        logger.warning(
            "unreadable record batch in %s/%d at offsets %s, skipped and dead-lettered: %s",
            topic, partition, offsets, error.str(),
        )  # fmt: skip
        self.marks[(topic, partition, end)] = (offsets, error.str())
        return _StandIn(topic, partition, end)

    def _last_unreadable(self, topic: str, partition: int, base: int, start: int) -> int:
        """The last offset of the unreadable batch at `base`, known to reach `start` at least:
        offsets read from a batch's first one, so a fetch from any offset of it fails at
        `base`. Exponential then binary search with a consumer of its own, which reads nothing
        else; a look that times out counts as readable (a later failure looks again)."""
        probe = Consumer(
            {
                **{
                    key: value
                    for key, value in self._configuration.items()
                    if not key.startswith("arroyo.") and key not in ("stats_cb", "on_commit")
                },
                "group.id": "unreadable-record-probe",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "statistics.interval.ms": 0,
            }
        )
        try:
            _low, high = probe.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=PROBE_TIMEOUT
            )

            def fails(offset: int) -> bool:
                probe.assign([TopicPartition(topic, partition, offset)])
                deadline = time.monotonic() + PROBE_TIMEOUT
                while time.monotonic() < deadline:
                    found = probe.poll(0.5)
                    if found is None or found.partition() != partition:
                        continue
                    error = found.error()
                    return (
                        error is not None
                        and error.code() in UNREADABLE_ERRORS
                        and found.offset() == base
                    )
                return False

            bad, step = start, 1
            while bad + step < high and fails(bad + step):
                bad, step = bad + step, step * 2
            good = min(bad + step, high)
            while good - bad > 1:
                middle = (bad + good) // 2
                if fails(middle):
                    bad = middle
                else:
                    good = middle
            return bad
        finally:
            probe.close()


def _where(message: Message[Any, Any]) -> tuple[str, int, int]:
    return (message.topic() or "", message.partition() or 0, message.offset() or 0)


class RecordReader(KafkaConsumer):
    """arroyo's Kafka consumer, handing over unreadable records and tombstones (module
    docstring) instead of failing on the first and emptying the second."""

    def __init__(self, configuration: dict[str, Any]) -> None:
        super().__init__(configuration)
        inner = self._KafkaConsumer__consumer  # type: ignore[has-type]
        self._records = _Records(inner, dict(configuration))
        self._KafkaConsumer__consumer = self._records

    def poll(self, timeout: float | None = None) -> BrokerValue[KafkaPayload] | None:
        value = super().poll(timeout)
        marks = self._records.marks
        if value is None or not marks:
            return value
        where = (value.partition.topic.name, value.partition.index, value.offset)
        if where not in marks:
            return value
        mark = marks.pop(where)
        payload = value.payload
        if mark is None:  # a tombstone keeps its null value
            replaced = KafkaPayload(payload.key, cast(bytes, None), payload.headers)
        else:
            offsets, error = mark
            replaced = UnreadablePayload(None, cast(bytes, None), [(offsets, error.encode())])
        return BrokerValue(replaced, value.partition, value.offset, value.timestamp)
