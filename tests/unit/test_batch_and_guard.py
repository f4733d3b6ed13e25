from __future__ import annotations

from datetime import datetime

import pytest
from arroyo.types import BrokerValue, Partition, Topic

from consumer.errors import FatalError
from consumer.strategy.batch import BatchBuffer
from consumer.strategy.guard import DeadLetterGuard
from consumer.strategy.items import Classified, Skipped


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _value(offset: int, size: int) -> BrokerValue[Classified]:
    return BrokerValue(Skipped("x", size), Partition(Topic("t"), 0), offset, datetime.now())


def test_flushes_on_count_bytes_or_time_since_the_first_message() -> None:
    clock = Clock()
    by_count = BatchBuffer(max_messages=3, max_bytes=10**9, max_time=1.0, clock=clock)
    for offset in range(3):
        assert not by_count.is_ready
        by_count.append(_value(offset, 1))
    assert by_count.is_ready and by_count.readiness_reason == "size"

    by_bytes = BatchBuffer(max_messages=100, max_bytes=1000, max_time=1.0, clock=clock)
    by_bytes.append(_value(0, 600))
    assert not by_bytes.is_ready
    by_bytes.append(_value(1, 600))
    assert by_bytes.readiness_reason == "bytes"

    clock.now += 50  # a long idle spell before the first message does not count
    by_time = BatchBuffer(max_messages=100, max_bytes=10**9, max_time=1.0, clock=clock)
    assert not by_time.is_ready
    by_time.append(_value(0, 1))
    assert not by_time.is_ready
    clock.now += 1.0
    assert by_time.readiness_reason == "time"
    assert by_time.new().is_empty


def test_guard_trips_only_on_a_full_window_of_mostly_bad() -> None:
    guard = DeadLetterGuard(window=100, ratio=0.9)
    guard.check(good=0, bad=80)  # window not full yet
    guard.check(good=5, bad=0)
    with pytest.raises(FatalError, match="95 of the last 100"):
        guard.check(good=0, bad=15)
    guard.check(good=15, bad=0)  # the refused batch left no trace: 80 bad of 100, under 90%
    with pytest.raises(FatalError):
        guard.check(good=0, bad=100)
    DeadLetterGuard(window=10, ratio=0).check(good=0, bad=1000)  # 0 disables
