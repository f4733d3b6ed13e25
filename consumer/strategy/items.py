"""What travels from the decode step to the save step: one item per Kafka message.

Every message, good or bad, becomes an item inside the batch, so its offset is committed only
with the batch that saved it, dead-lettered it or counted it as skipped (arroyo-notes §4.5:
nothing may overtake unsaved messages on its way to the commit).
"""

from __future__ import annotations

from dataclasses import dataclass

from arroyo.backends.kafka import KafkaPayload

from consumer.pipeline.job import Job


@dataclass(frozen=True, slots=True)
class Accepted:
    """A decoded job; the original payload stays with it in case the save dead-letters it."""

    job: Job
    payload: KafkaPayload
    size: int


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str
    size: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A bad message; the original key, value and headers go to the dead-letter topic."""

    reason: str
    detail: str
    payload: KafkaPayload
    size: int


Item = Accepted | Skipped | Rejected
