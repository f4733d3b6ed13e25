"""`consumer dlq replay`: put dead letters back on the input topic.

Reads the dead-letter topic with a consumer group of its own per selection of reasons (so each
dead letter is replayed at most once per selection, and a second run continues where the first
stopped, while letters left alone stay available to a run that selects them), keeps those whose
reason can be fixed by the world changing (`REPLAYABLE_REASONS`, such as a project created after
its events arrived; `--reason` picks others, `--all` takes everything), and produces each with
its original key, value and own headers to the worker's input topic (`kafka.topic`; another
only with `--to`): never to the topic a letter's headers name, which anyone who can write a
message can forge. Dead-letter headers (`reason`, `original_*`, `replayed_from_dlq_offset`, in
any case) are stripped first; the replay adds its own `replayed_from_dlq_offset`.

A letter that cannot be replayed is skipped and reported, never a reason to stop: one recorded
as a reference (`value_replaced`: its value is not the message), one from another topic than
the target (without `--to`), one the broker refuses (size, policy, authorization). Offsets are
committed as it goes, every `COMMIT_EVERY` letters, once the broker acknowledged or refused
each replayed copy, so a rerun never re-produces what a run already did; only a broker that
does not answer stops it (TransientError), after committing what was settled before.
Stops when it has read to the end of every partition, or after `--limit` replays.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.errors import TransientError
from consumer.settings import Settings
from consumer.strategy.dlq import (
    DLQ_HEADERS,
    HEADER_REASON,
    HEADER_REPLACED,
    HEADER_TOPIC,
    REPLAYABLE_REASONS,
)
from consumer.strategy.dlq import REFUSED as RECORD_REFUSED

logger = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]

REPLAYED_HEADER = "replayed_from_dlq_offset"
STRIPPED_HEADERS = frozenset(name.lower() for name in (*DLQ_HEADERS, REPLAYED_HEADER))
COMMIT_EVERY = 200

# Refusals of one replayed copy (skip it): the broker's refusals of one record, and of the topic
# it is sent to; anything else is the broker's state (stop).
REFUSED = RECORD_REFUSED | frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_EXCEPTION,
    }
)


@dataclass
class ReplayReport:
    read: int = 0
    replayed: int = 0
    kept: dict[str, int] = field(default_factory=dict)  # reason → dead letters left alone
    skipped: dict[str, int] = field(default_factory=dict)  # why → letters that cannot be replayed


class _Replayer:
    """The letters read since the last commit, in order, and what became of each."""

    def __init__(self, consumer: Consumer, producer: Producer, dlq_topic: str, target: str) -> None:
        self.consumer = consumer
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.target = target
        self.read: list[tuple[int, int]] = []  # (partition, offset)
        self.outcome: dict[tuple[int, int], str | None] = {}  # produced: None ok, else error
        self.refused: dict[tuple[int, int], str] = {}
        self.produced: set[tuple[int, int]] = set()
        self.copies: dict[tuple[int, int], tuple[bytes | None, bytes | None, Headers]] = {}

    def _flush(self) -> None:
        deadline = time.monotonic() + 30
        while self.producer.flush(max(0.0, deadline - time.monotonic())) > 0:
            if time.monotonic() >= deadline:
                break

    def delivered(self, where: tuple[int, int], error: KafkaError | None, _: object) -> None:
        if error is None:
            self.outcome[where] = None
        elif error.code() in REFUSED:
            self.refused[where] = str(error.str())
            self.outcome[where] = None
        else:
            self.outcome[where] = str(error)

    def settle(self, report: ReplayReport) -> None:
        """Wait for the replayed copies, commit every partition up to its first copy that
        failed (all when none did), and raise TransientError if one did."""
        self._flush()
        # The broker refuses a batch whole: each copy it refused is tried again alone first.
        for where in sorted(self.refused):
            del self.refused[where]
            del self.outcome[where]
            key, value, headers = self.copies[where]
            self.producer.produce(
                self.target,
                value=value,
                key=key,
                headers=headers,
                on_delivery=functools.partial(self.delivered, where),
            )
            self._flush()
        positions: dict[int, int] = {}
        stuck: set[int] = set()
        failure = ""
        for where in self.read:
            partition, offset = where
            if partition in stuck:
                continue
            error = (
                self.outcome.get(where, "not acknowledged in time")
                if where in self.produced
                else None
            )
            if error is None:
                positions[partition] = offset + 1
            else:
                failure = failure or error
                stuck.add(partition)
        for where, why in self.refused.items():
            report.replayed -= 1
            report.skipped[f"refused: {why}"] = report.skipped.get(f"refused: {why}", 0) + 1
            logger.warning("dead letter %d:%d not replayed, the broker refuses it: %s", *where, why)
        if positions:
            self.consumer.commit(
                offsets=[TopicPartition(self.dlq_topic, p, o) for p, o in positions.items()],
                asynchronous=False,
            )
        self.read.clear()
        self.outcome.clear()
        self.refused.clear()
        self.produced.clear()
        self.copies.clear()
        if failure:
            raise TransientError(f"replayed messages not acknowledged: {failure}")


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
    not answer (what was settled before is committed)."""
    wanted = set(reasons) if reasons else set(REPLAYABLE_REASONS)
    target = to_topic or settings.kafka.topic
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
    producer = Producer(
        {
            **client,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
        }
    )
    report = ReplayReport()
    metadata = consumer.list_topics(settings.kafka.dlq_topic, timeout=10)
    topic = metadata.topics.get(settings.kafka.dlq_topic)
    if topic is None or topic.error is not None:
        consumer.close()
        return report
    partitions_left = set(topic.partitions)
    consumer.subscribe([settings.kafka.dlq_topic])
    replayer = _Replayer(consumer, producer, settings.kafka.dlq_topic, target)
    last_activity = time.monotonic()

    def skip(why: str) -> None:
        report.skipped[why] = report.skipped.get(why, 0) + 1

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
            where = (message.partition() or 0, message.offset() or 0)
            replayer.read.append(where)
            # Exact names, the last of each: the worker adds its own after the message's.
            headers = dict(_header_items(message))
            reason = _text(headers.get(HEADER_REASON))
            if not (replay_all or reason in wanted):
                report.kept[reason] = report.kept.get(reason, 0) + 1
            elif HEADER_REPLACED in headers:
                skip("value replaced by a reference")
            elif to_topic is None and _text(headers.get(HEADER_TOPIC)) not in ("", target):
                skip(f"from another topic than {target} (--to replays it)")
            elif copy := _produce(
                producer, message, target, functools.partial(replayer.delivered, where)
            ):
                replayer.produced.add(where)
                replayer.copies[where] = copy
                report.replayed += 1
            else:
                skip("refused by the producer")
            if len(replayer.read) >= COMMIT_EVERY:
                replayer.settle(report)
        replayer.settle(report)
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


def _header_items(message: Message[bytes, bytes]) -> list[tuple[str, str | bytes | None]]:
    raw = message.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _produce(
    producer: Producer,
    message: Message[bytes, bytes],
    topic: str,
    delivered: functools.partial[None],
) -> tuple[bytes | None, bytes | None, Headers] | None:
    """Queue the replayed copy (returned: key, value, headers); None when the producer refuses
    it outright (too large)."""
    headers: Headers = [
        (key, value) for key, value in _header_items(message) if key.lower() not in STRIPPED_HEADERS
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
            return message.key(), message.value(), headers
        except BufferError:
            producer.poll(0.1)
        except KafkaException as error:
            if error.args[0].code() in REFUSED:
                logger.warning(
                    "dead letter %s:%s not replayed: %s",
                    message.partition(), message.offset(), error,
                )  # fmt: skip
                return None
            raise TransientError(f"replaying to {topic}: {error}") from None
