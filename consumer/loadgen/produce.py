"""`consumer produce`: put realistic occurrences on the topic, at a chosen rate and count."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer

from consumer.loadgen.occurrences import wrap_event


@dataclass
class ProduceReport:
    sent: int
    failed: int
    seconds: float


def produce_occurrences(
    client_config: dict[str, str],
    topic: str,
    events: Iterator[dict[str, Any]],
    *,
    count: int,
    project_ids: Sequence[int],
    rate: float = 0.0,
    seed: int = 0,
) -> ProduceReport:
    """Produce `count` occurrences wrapping `events`, spread over `project_ids`; `rate` in
    messages per second (0: as fast as the broker takes them). Blocks until all are acknowledged."""
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

    started = time.monotonic()
    for index in range(count):
        key, value = wrap_event(next(events), project_ids[index % len(project_ids)], rng)
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if rate > 0:
            ahead = (index + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)
    return ProduceReport(sent=count - failed, failed=failed, seconds=time.monotonic() - started)
