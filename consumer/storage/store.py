"""The storage facade the pipeline uses: every call is batch-wide and bounded in statements.

Built once per worker process from the settings; owns the PostgreSQL pool, the Redis client and
the caches. Redis is a cache only (CONTRACT §5): when it fails, calls count the error, treat it
as a miss and go on against PostgreSQL. PostgreSQL failures raise TransientError.

    store = Storage.open(settings)
    projects = store.projects([1, 2, 3])            # live projects by id (model cache)
    orgs = store.organizations({p.organization_id for p in projects.values()})
    options = store.project_options([1, 2])         # {project_id: {key: json value}}
    releases = store.releases([ReleaseRequest(...)])          # {(project_id, version): Release}
    dists = store.distributions([DistributionRequest(...)])   # {(release_id, name): id}
    envs = store.environments([EnvironmentRequest(...)])      # {(organization_id, name): Environment}
    store.nodestore.set_many_encoded([(node_id, data), ...])
    store.close()
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from consumer.settings import Settings
from consumer.storage.models import (
    DistributionRequest,
    Environment,
    EnvironmentRequest,
    Organization,
    Project,
    Release,
    ReleaseRequest,
)
from consumer.storage.nodestore import NodeStore


class Storage:
    nodestore: NodeStore

    @classmethod
    def open(cls, settings: Settings) -> Storage:
        """Open the pool and the Redis client; TransientError when PostgreSQL is unreachable."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def projects(self, ids: Iterable[int]) -> dict[int, Project]:
        """Projects by id through the model cache, one Redis round trip and at most one query.
        Missing ids are absent from the result; soft-deleted projects are returned with
        `date_deleted` set (the caller skips them) so that "deleted" and "unknown" differ."""
        raise NotImplementedError

    def organizations(self, ids: Iterable[int]) -> dict[int, Organization]:
        """Organizations by id through the model cache (same rules as `projects`)."""
        raise NotImplementedError

    def project_options(self, project_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """All options of each project (`sentry_projectoptions`, JSON values), cached."""
        raise NotImplementedError

    def releases(self, requests: Sequence[ReleaseRequest]) -> dict[tuple[int, str], Release]:
        """Get or create releases and guarantee every (release, project) link; set the
        has_releases flag of projects that lack it. Invalid versions (Sentry's
        `Release.is_valid_version`) are left out of the result: no release, no link."""
        raise NotImplementedError

    def distributions(self, requests: Sequence[DistributionRequest]) -> dict[tuple[int, str], int]:
        """Get or create distributions; `{(release_id, name): distribution id}`."""
        raise NotImplementedError

    def environments(
        self, requests: Sequence[EnvironmentRequest]
    ) -> dict[tuple[int, str], Environment]:
        """Get or create environments (the empty name for none) and every environment-project
        link; `{(organization_id, name): Environment}`."""
        raise NotImplementedError
