"""The rows the pipeline reads and resolves, as frozen values (what the model cache stores, as
JSON, never pickles)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
