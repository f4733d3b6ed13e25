"""What travels from the decode step to the save step: one item per Kafka message.

Every message, good or bad, becomes an item inside the batch, so its offset is committed only
with the batch that saved it, dead-lettered it or counted it as skipped (arroyo-notes §4.5:
nothing may overtake unsaved messages on its way to the commit).

The decode step makes a `Classified` item per message (a `Pending` one for a message to
normalize); the normalize step turns each batch's `Pending` items into `Accepted` ones, or
`Rejected` ones for events Relay rejects, so the save step gets `Item`s only.
"""

from __future__ import annotations

from dataclasses import dataclass

from arroyo.backends.kafka import KafkaPayload

from consumer.pipeline.job import Job
from consumer.pipeline.message import Prepared


@dataclass(frozen=True, slots=True)
class Pending:
    """A message checked and ready for Relay, normalized with the rest of its batch."""

    prepared: Prepared
    payload: KafkaPayload
    size: int


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


Classified = Pending | Skipped | Rejected
Item = Accepted | Skipped | Rejected
