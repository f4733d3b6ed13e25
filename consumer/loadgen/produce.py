"""`consumer produce`: put realistic occurrences on the topic, at a chosen rate and count.

`produce_occurrences` is the library entry point (the demo and the benchmark call it too).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from confluent_kafka import KafkaError, Producer

from consumer.loadgen.occurrences import GOOD, Sample, messages
from consumer.loadgen.progress import Progress

# How long the final flush may wait for the broker to acknowledge what is still queued.
FLUSH_TIMEOUT = 60.0


@dataclass
class ProduceReport:
    """`sent` messages acknowledged by the broker, `failed` not; `kinds` counts what was handed
    to the producer by kind (`good`, `raw_file`, or a kind of bad message)."""

    sent: int
    failed: int
    seconds: float
    kinds: Mapping[str, int] = field(default_factory=dict)

    @property
    def bad(self) -> int:
        return sum(count for kind, count in self.kinds.items() if kind != GOOD)


def produce_occurrences(
    client_config: Mapping[str, Any],
    topic: str,
    events: Iterator[Sample],
    *,
    count: int | None,
    project_ids: Sequence[int],
    rate: float = 0.0,
    seed: int = 0,
    bad_ratio: float = 0.0,
    bad_kinds: Sequence[str] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> ProduceReport:
    """Produce `count` messages (None: until `stop` is set) wrapping `events` as occurrences
    spread over `project_ids`, a `bad_ratio` share of them spoiled (`occurrences.BAD_KINDS`).

    `rate` is in messages per second (0: as fast as the broker takes them). Blocks until every
    message is acknowledged or FLUSH_TIMEOUT has passed (unacknowledged ones count as failed).
    """
    rng = random.Random(seed)
    producer = Producer(
        {
            **client_config,
            "linger.ms": 20,
            "compression.type": "lz4",
            "acks": "all",
            "queue.buffering.max.messages": 200_000,
        }
    )
    failed = 0

    def delivered(error: KafkaError | None, _message: object) -> None:
        nonlocal failed
        if error is not None:
            failed += 1

    stop = stop or threading.Event()
    kinds: Counter[str] = Counter()
    stream = messages(events, project_ids, rng, bad_ratio=bad_ratio, bad_kinds=bad_kinds)
    produced = 0
    started = time.monotonic()
    for message in islice(stream, count):
        if stop.is_set():
            break
        while True:
            try:
                producer.produce(topic, value=message.value, key=message.key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        kinds[message.kind] += 1
        produced += 1
        producer.poll(0)
        if progress is not None:
            progress.update(produced)
        if rate > 0:
            ahead = produced / rate - (time.monotonic() - started)
            # Sleep in slices of a few milliseconds at least: shorter sleeps cost more than
            # they smooth.
            if ahead > 0.005:
                stop.wait(ahead)
    unacknowledged = producer.flush(FLUSH_TIMEOUT)
    if progress is not None:
        progress.close()
    failed += unacknowledged
    return ProduceReport(
        sent=produced - failed,
        failed=failed,
        seconds=time.monotonic() - started,
        kinds=dict(kinds),
    )
