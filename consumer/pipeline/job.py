"""The Job: one occurrence with its event, on its way through save_generic_events.

A Job is built by `MessageDecoder.finish` (the event normalized by Relay) on the main thread or
the normalize thread, and then completed (user-agent contexts, top-level attributes pulled out,
reference §2.0) and mutated by the steps of `save_generic_events` on the save thread (reference
§1 lists Sentry's job keys; these fields are the ones the generic path uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from consumer.pipeline.tags import EventTags
from consumer.storage.models import GroupInfo


class EventUser(NamedTuple):
    project_id: int
    user_ident: Any
    username: Any
    email: Any
    ip_address: Any
    name: Any

    @property
    def tag_value(self) -> str | None:
        """The first non-empty of id, username, email, ip, as `<kind>:<value>`; else None."""
        if self.user_ident:
            return f"id:{self.user_ident}"
        if self.username:
            return f"username:{self.username}"
        if self.email:
            return f"email:{self.email}"
        if self.ip_address:
            return f"ip:{self.ip_address}"
        return None


class Outcome(NamedTuple):
    """Why a job was not saved: `skipped` (valid, deliberately not saved: counted) or `rejected`
    (a bad message found at save time: dead-lettered with `reason` and `detail`)."""

    kind: Literal["skipped", "rejected"]
    reason: str
    detail: str = ""


@dataclass(slots=True)
class Job:
    """What the decode step hands to the save step for one message.

    `data` is the event being saved, mutated in place by every step (tags, metadata, metrics)
    and finally written to the nodestore; `occurrence_json` is the occurrence document (as
    Sentry's `IssueOccurrence.to_dict` writes it, `occurrence.py`), written there beside it.
    """

    project_id: int
    event_id: str
    occurrence_id: str
    data: dict[str, Any]
    # The occurrence document as the nodestore stores it (compact JSON), encoded once by the
    # decoder.
    occurrence_json: bytes
    size: int = 0
    # The occurrence's group type (`group_types.py`), which the save step gates per organization.
    type_id: int = 0
    # Sentry's buffered-spans path: no event is saved, only the occurrence document (`data` is
    # empty and save_generic_events leaves the job alone).
    buffered: bool = False
    # Pulled out of the normalized event (Sentry's `_pull_out_data`), once: `pulled`.
    pulled: bool = False
    datetime: datetime | None = None
    release: str | None = None
    dist: str | None = None
    environment: str | None = None
    level: str | None = None
    logger_name: str | None = None
    transaction: str | None = None
    # The event's tags (`data["tags"]`) as the steps edit them, from the pull-out on.
    tags: EventTags | None = None
    # The event's `received` as the message carried it (Relay replaces the event's own with the
    # normalization time), for the event-age metric.
    received: Any = None
    # Seconds spent on this message before the save (decode on the main thread, normalize on the
    # main or normalize thread, its share of the batch's Jobs included), reported by the save step.
    decode_seconds: float = 0.0
    normalize_seconds: float = 0.0
    # Filled by the steps of save_generic_events (None until then: a Job is made per message on
    # the main or normalize thread, where every default made costs). `interfaces` is computed
    # once, by the first step that needs it (see `interfaces.event_interfaces`).
    interfaces: tuple[str, ...] | None = None
    release_id: int | None = None
    dist_id: int | None = None
    environment_id: int | None = None
    user: EventUser | None = None
    event_metadata: dict[str, Any] | None = None
    culprit: str = ""
    event_metrics: dict[str, Any] | None = None
    # The event's JSON when `bytes.stored.event` was measured, open at its end (event_metrics.py).
    event_json_head: bytes | None = None
    # The encoded nodestore rows (event, occurrence document): set once the event is final, so
    # that a retried save writes them again instead of running the steps over mutated data.
    # A buffered-spans job has the occurrence's row only.
    nodes: tuple[tuple[str, str], ...] | None = None
    # The occurrence's group, set by save_issue_occurrences once the group is durable.
    group: GroupInfo | None = None
    # Set by the save when this job is not saved; None: saved (once the save returned).
    outcome: Outcome | None = None

    def skip(self, reason: str) -> None:
        self.outcome = Outcome("skipped", reason)

    def reject(self, reason: str, detail: str) -> None:
        self.outcome = Outcome("rejected", reason, detail)
