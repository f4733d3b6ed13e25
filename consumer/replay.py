"""`consumer dlq replay`: put dead letters back on the input topic.

Reads the dead-letter topic with a consumer group of its own per selection of reasons (so each
dead letter is replayed at most once per selection, and a second run continues where the first
stopped, while letters left alone stay available to a run that selects them), keeps those whose
reason can be fixed by the world changing (`REPLAYABLE_REASONS`, such as a project created after
its events arrived; `--reason` picks others, `--all` takes everything), produces each with its original key, value
and headers to the topic it came from (or `--to`), and commits the dead-letter offsets only
after the broker acknowledged the replayed copies. Stops when it has read to the end of every
partition, or after `--limit` replays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from consumer.errors import TransientError
from consumer.settings import Settings
from consumer.strategy.dlq import DLQ_HEADERS, HEADER_REASON, HEADER_TOPIC, REPLAYABLE_REASONS

logger = logging.getLogger(__name__)

REPLAYED_HEADER = "replayed_from_dlq_offset"
COMMIT_EVERY = 1000

Delivered = Callable[[KafkaError | None, "Message[bytes, bytes]"], None]


@dataclass
class ReplayReport:
    read: int = 0
    replayed: int = 0
    kept: dict[str, int] = field(default_factory=dict)  # reason → dead letters left alone


def replay(
    settings: Settings,
    *,
    reasons: Collection[str] | None = None,
    replay_all: bool = False,
    to_topic: str | None = None,
    limit: int | None = None,
    idle_timeout: float = 5.0,
) -> ReplayReport:
    """Replay dead letters; see the module docstring. Raises TransientError if the broker does
    not acknowledge the replayed messages (nothing is committed then)."""
    wanted = set(reasons) if reasons else set(REPLAYABLE_REASONS)
    client = settings.kafka.client_config()
    consumer = Consumer(
        {
            **client,
            "group.id": replay_group(settings.kafka.group_id, reasons, replay_all),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    producer = Producer({**client, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    report = ReplayReport()
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Message[bytes, bytes]) -> None:
        if error is not None:
            failures.append(str(error))

    metadata = consumer.list_topics(settings.kafka.dlq_topic, timeout=10)
    topic = metadata.topics.get(settings.kafka.dlq_topic)
    if topic is None or topic.error is not None:
        consumer.close()
        return report
    partitions_left = set(topic.partitions)
    consumer.subscribe([settings.kafka.dlq_topic])
    pending: dict[int, int] = {}  # partition → next offset to commit once deliveries are acked
    last_activity = time.monotonic()
    try:
        while partitions_left and time.monotonic() - last_activity < idle_timeout:
            if limit is not None and report.replayed >= limit:
                break
            message = consumer.poll(0.5)
            if message is None:
                continue
            last_activity = time.monotonic()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    partitions_left.discard(message.partition() or 0)
                    continue
                raise TransientError(f"reading {settings.kafka.dlq_topic}: {error}")
            report.read += 1
            headers = dict(_header_items(message))
            reason = _text(headers.get(HEADER_REASON))
            if replay_all or reason in wanted:
                _produce(
                    producer,
                    message,
                    to_topic or _text(headers.get(HEADER_TOPIC)) or settings.kafka.topic,
                    delivered,
                )
                report.replayed += 1
            else:
                report.kept[reason] = report.kept.get(reason, 0) + 1
            pending[message.partition() or 0] = (message.offset() or 0) + 1
            if report.read % COMMIT_EVERY == 0:
                _commit(consumer, producer, settings.kafka.dlq_topic, pending, failures)
        _commit(consumer, producer, settings.kafka.dlq_topic, pending, failures)
    finally:
        consumer.close()
    return report


def replay_group(group_id: str, reasons: Collection[str] | None, replay_all: bool) -> str:
    """The consumer group that remembers the progress of one selection of reasons."""
    if replay_all:
        return f"{group_id}-dlq-replay-all"
    if reasons:
        return f"{group_id}-dlq-replay-" + "-".join(sorted(set(reasons)))
    return f"{group_id}-dlq-replay"


def _commit(
    consumer: Consumer, producer: Producer, topic: str, pending: dict[int, int], failures: list[str]
) -> None:
    """Commit what was read, once every replayed copy is acknowledged."""
    if producer.flush(30) > 0 or failures:
        raise TransientError(f"replayed messages not acknowledged: {failures[:1] or 'timeout'}")
    if pending:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in pending.items()], asynchronous=False
        )
        pending.clear()


def _header_items(message: Message[bytes, bytes]) -> list[tuple[str, str | bytes | None]]:
    raw = message.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _produce(
    producer: Producer, message: Message[bytes, bytes], topic: str, delivered: Delivered
) -> None:
    headers: list[tuple[str, str | bytes | None]] = [
        (key, value)
        for key, value in _header_items(message)
        if key not in DLQ_HEADERS and key != REPLAYED_HEADER
    ]
    headers.append((REPLAYED_HEADER, f"{message.partition()}:{message.offset()}".encode()))
    while True:
        try:
            producer.produce(
                topic,
                value=message.value(),
                key=message.key(),
                headers=headers,
                on_delivery=delivered,
            )
            return
        except BufferError:
            producer.poll(0.1)
