"""Samples a consumer group's committed offsets while a scenario runs.

A separate client (same group id, never subscribing, so never a member) asks the group
coordinator every `interval` seconds. Each sample keeps the wall-clock time at which the answer
arrived: the commit it reports happened before that moment, so every message below a sampled
offset must have been saved or dead-lettered before it. Samples during a broker outage fail and
are skipped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition


@dataclass(frozen=True)
class Sample:
    at: float  # wall clock when the answer arrived
    offsets: dict[int, int]  # partition → committed offset (absent: nothing committed yet)

    @property
    def total(self) -> int:
        return sum(self.offsets.values())


@dataclass
class OffsetSampler:
    bootstrap: str
    topic: str
    group: str
    partitions: int
    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    failures: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="offset-sampler", daemon=True)
        self._client = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )

    def start(self) -> OffsetSampler:
        self._thread.start()
        return self

    def sample(self, timeout: float = 2.0) -> Sample | None:
        partitions = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            answer = self._client.committed(partitions, timeout=timeout)
        except KafkaException:
            self.failures += 1
            return None
        at = time.time()
        offsets = {tp.partition: tp.offset for tp in answer if tp.error is None and tp.offset >= 0}
        return Sample(at, offsets)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            sample = self.sample()
            if sample is not None:
                self.samples.append(sample)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        final = self.sample(timeout=10)
        if final is not None:
            self.samples.append(final)
        self.close()

    def close(self) -> None:
        self._client.close()
