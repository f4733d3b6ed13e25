"""The rows the pipeline reads and resolves, as frozen values (what the model cache stores, as
JSON, never pickles)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Organization:
    id: int
    slug: str
    name: str
    status: int
    flags: int
    date_added: datetime
    date_deleted: datetime | None = None


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    organization_id: int
    slug: str | None
    name: str
    status: int
    flags: int | None
    platform: str | None
    date_added: datetime
    date_deleted: datetime | None = None

    HAS_RELEASES = 1  # bit 0 of `flags` (Sentry's Project.flags.has_releases)


@dataclass(frozen=True, slots=True)
class Environment:
    """`date_added` is None when the environment was resolved from the string-to-id cache,
    which keeps only ids (Sentry's own cache kept the whole row)."""

    id: int
    organization_id: int
    name: str
    date_added: datetime | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """`version` is the release's own name: the version asked for, or for a legacy release
    linked to the project `<project slug>-<version>` (reference §2.2). `date_added` is None when
    the release was resolved from the string-to-id cache, which keeps only ids."""

    id: int
    organization_id: int
    version: str
    date_added: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """One (project, version) pair seen in a batch; `date_added` is the latest event time."""

    organization_id: int
    project_id: int
    project_slug: str | None
    version: str
    date_added: datetime


@dataclass(frozen=True, slots=True)
class DistributionRequest:
    organization_id: int
    release_id: int
    name: str
    date_added: datetime


@dataclass(frozen=True, slots=True)
class EnvironmentRequest:
    """One (project, environment name) pair seen in a batch; "" is "no environment"."""

    organization_id: int
    project_id: int
    name: str
    date_added: datetime


@dataclass(frozen=True, slots=True)
class GroupValues:
    """The columns of `sentry_groupedmessage` that an occurrence sets or updates (reference
    sentry-issue-platform.md §1.4.1, §1.4.6): a new group's row, or one occurrence's update."""

    level: int
    message: str
    culprit: str
    platform: str | None
    type: int
    priority: int | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IssueOccurrence:
    """One saved occurrence as grouping sees it. `hashes` are the hashed fingerprint parts in
    order (the first is the primary hash); `environment_name` is "" without one."""

    project_id: int
    organization_id: int
    occurrence_id: str
    event_id: str
    hashes: tuple[str, ...]
    datetime: datetime
    values: GroupValues
    release_id: int | None
    release_version: str | None
    environment_id: int | None
    environment_name: str


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A group as read, locked, before an update."""

    id: int
    project_id: int
    status: int
    substatus: int | None
    level: int
    message: str
    culprit: str | None
    first_seen: datetime
    last_seen: datetime
    active_at: datetime | None
    times_seen: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Regression:
    """A resolved group brought back by an occurrence (reference §1.4.8 `_handle_regression`)."""

    event_id: str
    release_id: int | None
    release_version: str | None


@dataclass(frozen=True, slots=True)
class GroupChange:
    """What to write to one group after folding a batch's newly counted occurrences in."""

    id: int
    status: int
    substatus: int | None
    level: int
    message: str
    culprit: str | None
    first_seen: datetime
    last_seen: datetime
    active_at: datetime | None
    times_seen: int
    score: int
    data: dict[str, Any]
    regression: Regression | None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """Sentry's GroupInfo for one occurrence: its group and what the occurrence did to it."""

    group_id: int
    is_new: bool
    is_regression: bool
    is_new_group_environment: bool
    counted: bool


# (project_id, occurrence_id): an occurrence within a batch.
OccurrenceKey = tuple[int, str]
# Folds a group's newly counted occurrences into its change (`consumer.pipeline.groups.fold`).
Fold = Callable[[GroupRow, Sequence[IssueOccurrence]], GroupChange]
