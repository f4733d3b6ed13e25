"""What the pipeline needs from storage: the methods of `consumer.storage.store.Storage` that
save_generic_events calls, as a Protocol, so the real facade and a test fake both fit.

Every call is batch-wide. Calls raise TransientError when PostgreSQL is unavailable; the
caller lets it propagate so the whole batch is retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from consumer.storage.models import (
    DistributionRequest,
    Environment,
    EnvironmentRequest,
    Fold,
    GroupInfo,
    IssueOccurrence,
    OccurrenceKey,
    Organization,
    Project,
    Release,
    ReleaseRequest,
)
from consumer.storage.nodestore import Compression


class NodeStoreAPI(Protocol):
    compression: Compression

    def set_many_encoded(
        self, nodes: Iterable[tuple[str, str]], *, now: datetime | None = None
    ) -> int: ...


class StorageAPI(Protocol):
    @property
    def nodestore(self) -> NodeStoreAPI: ...

    def projects(self, ids: Iterable[int]) -> dict[int, Project]: ...

    def organizations(self, ids: Iterable[int]) -> dict[int, Organization]: ...

    def organization_options(
        self, organization_ids: Iterable[int], keys: Iterable[str]
    ) -> dict[int, dict[str, Any]]: ...

    def project_options(self, project_ids: Iterable[int]) -> dict[int, dict[str, Any]]: ...

    def releases(self, requests: Sequence[ReleaseRequest]) -> dict[tuple[int, str], Release]: ...

    def distributions(
        self, requests: Sequence[DistributionRequest]
    ) -> dict[tuple[int, str], int]: ...

    def environments(
        self, requests: Sequence[EnvironmentRequest]
    ) -> dict[tuple[int, str], Environment]: ...

    def save_groups(
        self, occurrences: Sequence[IssueOccurrence], fold: Fold
    ) -> dict[OccurrenceKey, GroupInfo]: ...

    def verified(
        self, project_ids: Iterable[int], organization_ids: Iterable[int]
    ) -> AbstractContextManager[None]:
        """After StaleCache: drop these cache entries; within, ids come from PostgreSQL."""
        ...
