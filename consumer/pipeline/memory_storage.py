"""The pipeline's storage (`storage_api.StorageAPI`) kept in dicts: the same methods and
promises as the PostgreSQL facade (`consumer.storage.store.Storage`), without I/O. It serves the
pipeline's unit tests and the pipeline benchmark (`consumer.bench.pipeline`); it stands in for
our facade, not for PostgreSQL or Redis.

It records every call, so tests can check that a batch costs one call per kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from consumer.errors import TransientError
from consumer.pipeline.releases import is_valid_version
from consumer.storage.models import (
    DistributionRequest,
    Environment,
    EnvironmentRequest,
    Fold,
    GroupInfo,
    GroupRow,
    IssueOccurrence,
    OccurrenceKey,
    Organization,
    Project,
    Release,
    ReleaseRequest,
)
from consumer.storage.nodestore import Compression, decode_blob

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class MemoryNodeStore:
    compression: Compression = field(default_factory=Compression)
    rows: dict[str, str] = field(default_factory=dict)
    fail_next: int = 0  # raise this many times before writing (to test retries)

    def set_many_encoded(
        self, nodes: Iterable[tuple[str, str]], *, now: datetime | None = None
    ) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise TransientError("in-memory nodestore made to fail")
        latest = dict(nodes)
        self.rows.update(latest)
        return len(latest)

    def document(self, node_id: str) -> Any:
        return decode_blob(self.rows[node_id])[0]


@dataclass
class MemoryStorage:
    projects_by_id: dict[int, Project] = field(default_factory=dict)
    organizations_by_id: dict[int, Organization] = field(default_factory=dict)
    options: dict[int, dict[str, Any]] = field(default_factory=dict)
    organization_option_rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    nodestore: MemoryNodeStore = field(default_factory=MemoryNodeStore)
    release_rows: dict[tuple[int, str], Release] = field(default_factory=dict)
    release_links: set[tuple[int, int]] = field(default_factory=set)  # (release_id, project_id)
    dist_rows: dict[tuple[int, str], tuple[int, DistributionRequest]] = field(default_factory=dict)
    environment_rows: dict[tuple[int, str], Environment] = field(default_factory=dict)
    environment_links: set[tuple[int, int]] = field(default_factory=set)
    groups: dict[int, GroupRow] = field(default_factory=dict)
    group_hashes: dict[tuple[int, str], int] = field(default_factory=dict)
    short_ids: dict[int, int] = field(default_factory=dict)  # group id → short id
    counters: dict[int, int] = field(default_factory=dict)  # project id → last short id
    counted: set[OccurrenceKey] = field(default_factory=set)
    group_environments: set[tuple[int, int]] = field(default_factory=set)
    regressions: list[tuple[int, str]] = field(default_factory=list)  # (group id, event id)
    calls: list[str] = field(default_factory=list)
    _next_id: int = 100

    # ------------------------------------------------------------------ setup helpers
    def add_organization(self, org_id: int, *, deleted: bool = False) -> Organization:
        org = Organization(
            id=org_id,
            slug=f"org-{org_id}",
            name=f"Org {org_id}",
            status=0,
            flags=0,
            date_added=EPOCH,
            date_deleted=EPOCH if deleted else None,
        )
        self.organizations_by_id[org_id] = org
        return org

    def add_project(
        self, project_id: int, org_id: int, *, deleted: bool = False, slug: str | None = None
    ) -> Project:
        project = Project(
            id=project_id,
            organization_id=org_id,
            slug=slug or f"proj-{project_id}",
            name=f"Project {project_id}",
            status=0,
            flags=0,
            platform=None,
            date_added=EPOCH,
            date_deleted=EPOCH if deleted else None,
        )
        self.projects_by_id[project_id] = project
        return project

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ------------------------------------------------------------------ the facade
    def projects(self, ids: Iterable[int]) -> dict[int, Project]:
        self.calls.append("projects")
        return {i: self.projects_by_id[i] for i in ids if i in self.projects_by_id}

    def organizations(self, ids: Iterable[int]) -> dict[int, Organization]:
        self.calls.append("organizations")
        return {i: self.organizations_by_id[i] for i in ids if i in self.organizations_by_id}

    def organization_options(
        self, organization_ids: Iterable[int], keys: Iterable[str]
    ) -> dict[int, dict[str, Any]]:
        self.calls.append("organization_options")
        wanted = set(keys)
        result = {}
        for org_id in organization_ids:
            found = {
                k: v
                for k, v in self.organization_option_rows.get(org_id, {}).items()
                if k in wanted
            }
            if found:
                result[org_id] = found
        return result

    def project_options(self, project_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        self.calls.append("project_options")
        return {pid: dict(self.options.get(pid, {})) for pid in project_ids}

    def releases(self, requests: Sequence[ReleaseRequest]) -> dict[tuple[int, str], Release]:
        self.calls.append("releases")
        result = {}
        for request in requests:
            if not is_valid_version(request.version):
                continue
            key = (request.organization_id, request.version)
            release = self.release_rows.get(key)
            if release is None:
                release = Release(
                    self._id(), request.organization_id, request.version, request.date_added
                )
                self.release_rows[key] = release
            self.release_links.add((release.id, request.project_id))
            project = self.projects_by_id[request.project_id]
            self.projects_by_id[request.project_id] = replace(
                project, flags=(project.flags or 0) | Project.HAS_RELEASES
            )
            result[(request.project_id, request.version)] = release
        return result

    def distributions(self, requests: Sequence[DistributionRequest]) -> dict[tuple[int, str], int]:
        self.calls.append("distributions")
        result = {}
        for request in requests:
            key = (request.release_id, request.name)
            if key not in self.dist_rows:
                self.dist_rows[key] = (self._id(), request)
            result[key] = self.dist_rows[key][0]
        return result

    def environments(
        self, requests: Sequence[EnvironmentRequest]
    ) -> dict[tuple[int, str], Environment]:
        self.calls.append("environments")
        result = {}
        for request in requests:
            key = (request.organization_id, request.name)
            environment = self.environment_rows.get(key)
            if environment is None:
                environment = Environment(
                    self._id(), request.organization_id, request.name, request.date_added
                )
                self.environment_rows[key] = environment
            self.environment_links.add((environment.id, request.project_id))
            result[key] = environment
        return result

    def save_groups(
        self, occurrences: Sequence[IssueOccurrence], fold: Fold
    ) -> dict[OccurrenceKey, GroupInfo]:
        """The rules of `consumer.storage.group_rows.save` over dicts, one occurrence at a
        time (release rows and counters are not kept)."""
        self.calls.append("save_groups")
        result: dict[OccurrenceKey, GroupInfo] = {}
        for occurrence in occurrences:
            key = (occurrence.project_id, occurrence.occurrence_id)
            project = occurrence.project_id
            group_id = next(
                (
                    self.group_hashes[(project, h)]
                    for h in occurrence.hashes
                    if (project, h) in self.group_hashes
                ),
                None,
            )
            is_new = group_id is None
            if group_id is None:
                group_id = self._id()
                values = occurrence.values
                self.counters[project] = self.counters.get(project, 0) + 1
                self.short_ids[group_id] = self.counters[project]
                self.groups[group_id] = GroupRow(
                    id=group_id,
                    project_id=project,
                    status=0,
                    substatus=3,
                    level=values.level,
                    message=values.message,
                    culprit=values.culprit,
                    first_seen=occurrence.datetime,
                    last_seen=occurrence.datetime,
                    active_at=occurrence.datetime,
                    times_seen=0,
                    data=values.data,
                )
            for h in occurrence.hashes:
                self.group_hashes.setdefault((project, h), group_id)
            counted = key not in self.counted
            regressed = False
            if counted:
                self.counted.add(key)
                change = fold(self.groups[group_id], [occurrence])
                self.groups[group_id] = replace(
                    self.groups[group_id],
                    status=change.status,
                    substatus=change.substatus,
                    level=change.level,
                    message=change.message,
                    culprit=change.culprit,
                    first_seen=change.first_seen,
                    last_seen=change.last_seen,
                    active_at=change.active_at,
                    times_seen=change.times_seen,
                    data=change.data,
                )
                if change.regression is not None:
                    regressed = True
                    self.regressions.append((group_id, occurrence.event_id))
            new_environment = False
            if occurrence.environment_id is not None:
                pair = (group_id, occurrence.environment_id)
                new_environment = pair not in self.group_environments
                self.group_environments.add(pair)
            result.setdefault(key, GroupInfo(group_id, is_new, regressed, new_environment, counted))
        return result

    @contextmanager
    def verified(
        self, project_ids: Iterable[int], organization_ids: Iterable[int]
    ) -> Iterator[None]:
        """No caches here: only records the call."""
        self.calls.append("verified")
        yield
