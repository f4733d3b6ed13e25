"""What the fault suite sends, and what each message should become.

Every message is a `Sent` record: its bytes, the outcome the contract promises for it (saved,
dead-lettered with one of some reasons, or skipped) and, once the broker acknowledged it, its
partition, offset and time. Good messages are realistic: events captured from the real
`sentry-sdk` client (`consumer.loadgen.sdk`) wrapped as occurrences the way the load generator
wraps them (`consumer.loadgen.occurrences.build_occurrence`).

`Feed` produces records on a background thread at a chosen pace (idempotent producer, acks=all:
a broker restart neither loses nor duplicates a message) and records where each one landed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from confluent_kafka import KafkaError, Message, Producer

from consumer.loadgen.occurrences import build_occurrence
from consumer.loadgen.sdk import event_stream
from consumer.storage.nodestore import event_node_id, occurrence_node_id

Outcome = Literal["saved", "dead_lettered", "skipped"]

# Largest message the suite produces (the oversized one), below the private broker's limit.
MAX_PRODUCED_BYTES = 4 * 1024 * 1024


@dataclass(eq=False)
class Sent:
    """One message and what it must become. `reasons`: the acceptable dead-letter reasons."""

    kind: str
    outcome: Outcome
    key: bytes | None
    value: bytes | None
    project_id: int | None = None
    event_id: str | None = None
    occurrence_id: str | None = None
    reasons: frozenset[str] = frozenset()
    # Content checks to leave out for this message (fields a bad-but-saved input spoils).
    unchecked: frozenset[str] = frozenset()
    partition: int = -1
    offset: int = -1
    delivered_at: float = 0.0  # wall clock of the acknowledgement
    error: str | None = None

    @property
    def event_node(self) -> str:
        assert self.project_id is not None and self.event_id is not None
        return event_node_id(self.project_id, self.event_id)

    @property
    def occurrence_node(self) -> str:
        assert self.project_id is not None and self.occurrence_id is not None
        return occurrence_node_id(self.occurrence_id, self.project_id)

    def message(self) -> dict[str, Any]:
        assert self.value is not None
        decoded: dict[str, Any] = orjson.loads(self.value)
        return decoded


def good(occurrence: dict[str, Any], kind: str = "good", **extra: Any) -> Sent:
    """A message the worker must save, from an occurrence dict (as `build_occurrence` makes)."""
    return Sent(
        kind=kind,
        outcome="saved",
        key=occurrence["fingerprint"][0].encode() if occurrence.get("fingerprint") else None,
        value=orjson.dumps(occurrence),
        project_id=occurrence["project_id"],
        event_id=occurrence["event_id"],
        occurrence_id=occurrence["id"],
        **extra,
    )


class Occurrences:
    """Fresh occurrences of sentry-sdk events for a set of projects (seeded, reproducible)."""

    def __init__(self, project_ids: Sequence[int], seed: int) -> None:
        self.project_ids = list(project_ids)
        self.rng = random.Random(seed)
        self._events: Iterator[dict[str, Any]] = event_stream(pool_size=400, seed=seed)

    def next(self, project_id: int | None = None) -> dict[str, Any]:
        event = next(self._events)
        project = project_id if project_id is not None else self.rng.choice(self.project_ids)
        return build_occurrence(event, project, self.rng)

    def good(self, count: int, project_ids: Sequence[int] | None = None) -> list[Sent]:
        ids = list(project_ids) if project_ids is not None else self.project_ids
        return [good(self.next(self.rng.choice(ids))) for _ in range(count)]


def mix(good_records: list[Sent], others: list[Sent], rng: random.Random) -> list[Sent]:
    """`others` spread at random positions through `good_records` (order within each kept)."""
    slots = sorted(rng.sample(range(len(good_records) + len(others)), len(others)))
    result: list[Sent] = []
    others_iter = iter(others)
    goods_iter = iter(good_records)
    slot_set = set(slots)
    for position in range(len(good_records) + len(others)):
        result.append(next(others_iter) if position in slot_set else next(goods_iter))
    return result


@dataclass
class Feed:
    """Produces records on a background thread; `join()` waits for every acknowledgement."""

    bootstrap: str
    topic: str
    extra: dict[str, Any] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": MAX_PRODUCED_BYTES + 65536,
                # Longer than any broker outage the suite causes: the producer keeps retrying.
                "message.timeout.ms": 300_000,
                "queue.buffering.max.messages": 200_000,
                **self.extra,
            }
        )
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._hurry = threading.Event()
        self.done = threading.Event()

    def _deliver(self, record: Sent) -> Any:
        def delivered(error: KafkaError | None, message: Message[bytes, bytes]) -> None:
            if error is not None:
                record.error = str(error)
                return
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            record.partition, record.offset = partition, offset
            record.delivered_at = time.time()

        return delivered

    def _produce(self, records: Sequence[Sent], seconds: float) -> None:
        started = time.monotonic()
        pace = seconds / max(len(records), 1)
        for index, record in enumerate(records):
            while True:
                try:
                    self._producer.produce(
                        self.topic,
                        value=record.value,
                        key=record.key,
                        on_delivery=self._deliver(record),
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)
            self.sent.append(record)
            self._producer.poll(0)
            ahead = started + (index + 1) * pace - time.monotonic()
            if ahead > 0.002 and not self._hurry.is_set():
                self._hurry.wait(ahead)

    def start(self, records: Sequence[Sent], seconds: float = 0.0) -> None:
        """Produce `records` spread evenly over `seconds` (0: as fast as possible)."""
        assert self._thread is None or not self._thread.is_alive()
        self.done.clear()
        self._hurry.clear()

        def run() -> None:
            try:
                self._produce(records, seconds)
            except BaseException as error:  # reported by join()
                self._failure = error
            finally:
                self.done.set()

        self._thread = threading.Thread(target=run, name="feed", daemon=True)
        self._thread.start()

    def hurry(self) -> None:
        """Produce what is left at once (the faults are over; the pace no longer matters)."""
        self._hurry.set()

    def send(self, records: Sequence[Sent], seconds: float = 0.0, timeout: float = 330.0) -> None:
        self.start(records, seconds)
        self.join(timeout)

    def join(self, timeout: float = 330.0) -> None:
        """Wait for the thread and for every acknowledgement; raise if any message failed."""
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the feed did not finish producing"
        if self._failure is not None:
            raise self._failure
        left = self._producer.flush(timeout)
        assert left == 0, f"{left} messages not acknowledged by the broker"
        failed = [record for record in self.sent if record.error is not None]
        assert not failed, f"{len(failed)} messages failed: {failed[0].error}"

    def pending(self) -> bool:
        return not self.done.is_set()

    def close(self) -> None:
        """Drop the producer (librdkafka keeps reconnecting, and logging, while it lives)."""
        self._producer.flush(10)
        del self._producer
