"""Dead letters: the original key, value and headers of a bad message, on the dead-letter topic,
with headers naming the reason and the origin (CONTRACT §6).

`produce_and_wait` returns only once the broker has acknowledged every dead letter (acks=all).
A dead letter that cannot be produced as it is (larger than the topic takes, or refused by the
broker for its size or the topic's policy) is still recorded: as a *reference* (where it came
from, its sizes, a SHA-256 of its value, why it was replaced) in place of its value, with the
`value_replaced` header; the partition moves on. Only a broker that does not answer (down,
unreachable, timing out) raises TransientError, so the batch, and its offsets, wait. A
reference the broker refuses too means the topic cannot take dead letters at all: FatalError.

`dead_letter_limit` reads the topic's `max.message.bytes` from the broker at start, so that a
letter that would not fit is replaced before it is sent, and refuses topics that cannot work.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from arroyo.backends.kafka import KafkaPayload
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from consumer import metrics
from consumer.errors import ConfigurationError, FatalError, TransientError

logger = logging.getLogger(__name__)

HEADER_REASON = "reason"
HEADER_DETAIL = "reason_detail"
HEADER_TOPIC = "original_topic"
HEADER_PARTITION = "original_partition"
HEADER_OFFSET = "original_offset"
HEADER_REPLACED = "value_replaced"
DLQ_HEADERS = frozenset(
    {HEADER_REASON, HEADER_DETAIL, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET, HEADER_REPLACED}
)
MAX_DETAIL = 512

# Reasons that a replay can fix (the data was fine, the world was not ready for it).
REPLAYABLE_REASONS = frozenset({"unknown_project", "unknown_organization"})

# Kafka's own framing: a record batch header, and per record and per header a generous bound on
# their varints and attributes. A letter is sent whole only when it fits with this to spare.
BATCH_OVERHEAD = 61 + 64
HEADER_OVERHEAD = 10
# The smallest dead-letter topic limit the worker accepts: a reference always fits in it.
MIN_TOPIC_LIMIT = 4096
# A key longer than this is left out of a reference (its size and digest are kept).
MAX_REFERENCE_KEY = 256
# What the producer may send when the topic's limit cannot be read (librdkafka's default).
DEFAULT_LIMIT = 1_000_000

# Refusals of this one record: replace it by a reference. Anything else is the broker's state.
REFUSED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.POLICY_VIOLATION,
    }
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    payload: KafkaPayload
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int

    def origin_headers(self) -> list[tuple[str, str | bytes | None]]:
        return [
            (HEADER_REASON, self.reason.encode()),
            (HEADER_DETAIL, self.detail[:MAX_DETAIL].encode("utf-8", "replace")),
            (HEADER_TOPIC, self.topic.encode()),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
        ]

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """The message's own headers (any dead-letter header it carried dropped: they would
        forge an origin), then the dead-letter headers."""
        own: list[tuple[str, str | bytes | None]] = [
            (key, value) for key, value in self.payload.headers if key.lower() not in DLQ_HEADERS
        ]
        return [*own, *self.origin_headers()]

    def wire_size(self) -> int:
        """An upper bound of the record's size in a batch of its own."""
        return record_size(self.payload.key, self.payload.value, self.headers())

    def reference(
        self, why: str
    ) -> tuple[bytes | None, bytes, list[tuple[str, str | bytes | None]]]:
        """(key, value, headers) standing in for a letter that cannot be sent as it is."""
        key, value = self.payload.key, self.payload.value
        document = {
            "replaced": why,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "value_bytes": None if value is None else len(value),
            "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
            "key_bytes": None if key is None else len(key),
            "key_sha256": None if key is None else hashlib.sha256(key).hexdigest(),
            "headers": len(self.payload.headers),
            "headers_bytes": sum(len(k) + len(v or b"") for k, v in self.payload.headers),
        }
        small_key = key if key is not None and len(key) <= MAX_REFERENCE_KEY else None
        headers = [*self.origin_headers(), (HEADER_REPLACED, why[:MAX_DETAIL].encode())]
        return small_key, orjson.dumps(document), headers


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, str | bytes | None]]
) -> int:
    size = BATCH_OVERHEAD + len(key or b"") + len(value or b"")
    for name, header in headers:
        size += HEADER_OVERHEAD + len(name.encode()) + len(header or b"")
    return size


def dead_letter_limit(client_config: dict[str, Any], topic: str, timeout: float = 10.0) -> int:
    """The largest record the dead-letter topic takes (its `max.message.bytes`, read from the
    broker). A missing topic is fine when the broker creates topics (its `message.max.bytes`
    then applies); ConfigurationError when it does not, or when the limit is too small for a
    reference; a broker that cannot be asked (down, no permission) gives librdkafka's default,
    with a warning, and the broker's refusals are still handled per letter."""
    admin = AdminClient(client_config)
    try:
        future = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        configs = next(iter(future.values())).result(timeout=timeout)
        limit = int(configs["max.message.bytes"].value)
    except KafkaException as error:
        code = error.args[0].code() if error.args else None
        if code != KafkaError.UNKNOWN_TOPIC_OR_PART:
            logger.warning(
                "cannot read max.message.bytes of dead-letter topic %s (%s): assuming %d bytes",
                topic, error, DEFAULT_LIMIT,
            )  # fmt: skip
            return DEFAULT_LIMIT
        limit = _limit_of_a_new_topic(admin, topic, timeout)
    except Exception as error:  # noqa: BLE001 - a timeout, an odd answer: the default will do
        logger.warning(
            "cannot read max.message.bytes of dead-letter topic %s (%r): assuming %d bytes",
            topic, error, DEFAULT_LIMIT,
        )  # fmt: skip
        return DEFAULT_LIMIT
    if limit < MIN_TOPIC_LIMIT:
        raise ConfigurationError(
            f"dead-letter topic {topic} takes records of at most {limit} bytes; it needs "
            f"max.message.bytes >= {MIN_TOPIC_LIMIT} to record even a reference to a bad message"
        )
    return limit


def _limit_of_a_new_topic(admin: AdminClient, topic: str, timeout: float) -> int:
    metadata = admin.list_topics(timeout=timeout)
    broker = ConfigResource(ResourceType.BROKER, str(min(metadata.brokers)))
    configs = next(iter(admin.describe_configs([broker]).values())).result(timeout=timeout)
    if configs["auto.create.topics.enable"].value != "true":
        raise ConfigurationError(
            f"dead-letter topic {topic} does not exist and the broker does not create topics: "
            "create it (kafka.dlq_topic names it)"
        )
    return int(configs["message.max.bytes"].value)


class DeadLetterProducer:
    def __init__(
        self,
        client_config: dict[str, str],
        topic: str,
        timeout: float = 30.0,
        *,
        max_bytes: int = DEFAULT_LIMIT,
    ) -> None:
        """`max_bytes`: the largest record the topic takes (`dead_letter_limit`)."""
        self.topic = topic
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.replaced = 0  # letters recorded as a reference, since start
        # Per round of deliveries: index → why the broker refused it; other failures.
        self._refusals: dict[int, str] = {}
        self._failures: list[str] = []
        self._producer = Producer(
            {
                **client_config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                # Batches are cut at this size, so a batch of letters that each fit fits too.
                "message.max.bytes": max_bytes,
                "batch.size": min(max_bytes, 1_000_000),
                "message.timeout.ms": int(timeout * 1000),
            }
        )

    def produce_and_wait(self, letters: Sequence[DeadLetter]) -> None:
        """Produce every dead letter and wait for the broker's acknowledgement of each; a letter
        refused for its size or by policy is produced again as a reference."""
        if not letters:
            return
        refused: dict[int, str] = {}
        for index, letter in enumerate(letters):
            if letter.wire_size() > self.max_bytes:
                refused[index] = f"larger than the {self.max_bytes} bytes {self.topic} takes"
                continue
            headers = letter.headers()
            error = self._produce(letter.payload.key, letter.payload.value, headers, index)
            if error is not None:
                refused[index] = error
        # The broker refuses a batch whole: each letter it refused is tried again alone first.
        for index in sorted(self._wait()):
            letter = letters[index]
            error = self._produce(letter.payload.key, letter.payload.value, letter.headers(), index)
            refusal = self._wait().get(index) if error is None else error
            if refusal is not None:
                refused[index] = refusal
        if not refused:
            return
        for index, why in refused.items():
            letter = letters[index]
            logger.warning(
                "dead letter of %s/%d@%d (%s) recorded as a reference: %s",
                letter.topic, letter.partition, letter.offset, letter.reason, why,
            )  # fmt: skip
            key, value, headers = letter.reference(why)
            error = self._produce(key, value, headers, index)
            if error is not None:
                raise FatalError(
                    f"dead-letter topic {self.topic} refuses even a reference: {error}"
                )
        still = self._wait()
        if still:
            raise FatalError(
                f"dead-letter topic {self.topic} refuses even a reference: {next(iter(still.values()))}"
            )
        self.replaced += len(refused)
        metrics.DEAD_LETTERS_REPLACED.inc(len(refused))

    def _produce(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        index: int,
    ) -> str | None:
        """Queue one record; returns why the producer refused it, if it did."""
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=functools.partial(self._delivered, index),
                )
                return None
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as error:
                kafka_error: KafkaError = error.args[0]
                if kafka_error.code() in REFUSED:
                    return str(kafka_error.str())
                raise TransientError(f"dead-letter topic {self.topic}: {kafka_error}") from None

    def _delivered(self, index: int, error: KafkaError | None, _message: object) -> None:
        if error is None:
            return
        if error.code() in REFUSED:
            self._refusals[index] = f"refused by the broker: {error.str()}"
        else:
            self._failures.append(str(error))

    def _wait(self) -> dict[int, str]:
        """Wait for every queued record; returns the refusals, raises for anything else."""
        deadline = time.monotonic() + self.timeout
        try:
            while (remaining := self._producer.flush(max(0.0, deadline - time.monotonic()))) > 0:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"dead-letter topic {self.topic}: {remaining} deliveries not acknowledged"
                    )
            if self._failures:
                raise TransientError(
                    f"dead-letter topic {self.topic}: delivery failed: {self._failures[0]}"
                )
            return dict(self._refusals)
        finally:
            self._refusals, self._failures = {}, []

    def close(self) -> None:
        self._producer.flush(self.timeout)
