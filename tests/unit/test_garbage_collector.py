"""The worker's collector settings (`tune_garbage_collector`): the batches in flight do not make
the cyclic collector run, and reference cycles are still collected."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.loadgen.occurrences import wrap_event
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.message import MessageDecoder, Prepared
from consumer.worker import tune_garbage_collector

BATCH = 500


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection while the test runs; the collector's settings are
    restored afterwards."""
    thresholds = gc.get_threshold()
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _messages(count: int) -> list[bytes]:
    rng = random.Random(6)
    events = capture_events(100, seed=6)
    return [wrap_event(events[i % len(events)], 1, rng)[1] for i in range(count)]


def test_three_batches_in_flight_do_not_wake_the_collector(collections: list[int]) -> None:
    messages = _messages(3 * BATCH)
    decoder = MessageDecoder()
    tune_garbage_collector(BATCH)
    collections.clear()
    in_flight = []
    for start in range(0, len(messages), BATCH):
        prepared = [decoder.prepare(value) for value in messages[start : start + BATCH]]
        in_flight.append(decoder.finish([item for item in prepared if isinstance(item, Prepared)]))
    assert sum(map(len, in_flight)) == 3 * BATCH
    # With the former threshold (20,000) the same batches made it run several times.
    assert collections == []


def test_reference_cycles_are_still_collected(collections: list[int]) -> None:
    tune_garbage_collector(BATCH)
    collections.clear()
    # Past the threshold, whatever the count it started from (a collection runs once the count
    # of new objects exceeds it, and the count may have just been reset).
    for _ in range(gc.get_threshold()[0] + 1000):
        cycle: list[Any] = []
        cycle.append(cycle)
    del cycle
    assert collections, "cyclic garbage past the threshold makes the collector run"


def test_the_threshold_grows_with_the_batch_size(collections: list[int]) -> None:
    tune_garbage_collector(500)
    small = gc.get_threshold()[0]
    tune_garbage_collector(5_000)
    large = gc.get_threshold()[0]
    # Three batches in flight, about 45 containers per decoded event.
    assert large > small
    assert large >= 3 * 45 * 5_000
