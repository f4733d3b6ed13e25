"""The Job: one occurrence with its event, on its way through save_generic_events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Job:
    """What the decode step hands to the save step for one message.

    `data` is the event being saved, mutated in place by every step (tags, metadata, metrics)
    and finally written to the nodestore; `occurrence` is the message without its `event`,
    written to the nodestore as the occurrence document.
    """

    project_id: int
    event_id: str
    occurrence_id: str
    data: dict[str, Any]
    occurrence: dict[str, Any]
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
