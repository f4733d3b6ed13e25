"""Releases and distributions (reference §2.2, Sentry's `_get_or_create_release_many`).

Resolution (`resolve_releases`: one storage call for releases, one for dists, no job changed)
then application (`apply_releases`: pure):

1. Jobs with a release are grouped by (project, version); each group asks for its release with
   the first job's event time as `date_added` (Sentry's order: the first event processed). Versions Sentry refuses (`Release.is_valid_version`)
   are not asked for: those jobs keep their raw release and get no tags.
2. For a job whose release exists: the `release` tag is replaced by `sentry:release`; a `dist`
   is resolved within that release (`date_added` = the time of the first job of the batch that
   names it) and the `dist` tag replaced by `sentry:dist`.
3. A dist longer than `sentry_distribution.name` allows is dropped from the event (and not
   tagged) with a counted warning (CONTRACT §9.5); Sentry would fail the event on the database
   error instead. Relay already drops dists over 64 characters, so this is a safety net.

Storage links every release to every project that asked for it and sets the has-releases flag
(CONTRACT §9.2).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from consumer import metrics
from consumer.storage.models import DistributionRequest, Project, Release, ReleaseRequest

if TYPE_CHECKING:
    from consumer.pipeline.job import Job
    from consumer.pipeline.storage_api import StorageAPI

logger = logging.getLogger(__name__)

BAD_RELEASE_CHARS = "\r\n\f\t/\\"
MAX_DIST_LENGTH = 64  # sentry_distribution.name is varchar(64)


def is_valid_version(value: Any) -> bool:
    """Sentry's `Release.is_valid_version`."""
    if value is None:
        return False
    if any(char in value for char in BAD_RELEASE_CHARS):
        return False
    stripped = str(value).strip()
    return not (not stripped or stripped in (".", "..") or stripped.lower() == "latest")


def release_requests(jobs: Sequence[Job], projects: Mapping[int, Project]) -> list[ReleaseRequest]:
    """One request per (project, valid version), `date_added` = the time of the batch's first
    job that names it: Sentry, one message at a time, creates the release with the first
    processed event's time and leaves it alone afterwards."""
    first: dict[tuple[int, str], datetime] = {}
    for job in jobs:
        if not job.release or not is_valid_version(job.release):
            continue
        assert job.datetime is not None
        first.setdefault((job.project_id, job.release), job.datetime)
    return [
        ReleaseRequest(
            organization_id=projects[project_id].organization_id,
            project_id=project_id,
            project_slug=projects[project_id].slug,
            version=version,
            date_added=date_added,
        )
        for (project_id, version), date_added in first.items()
    ]


def dist_too_long(dist: str | None) -> bool:
    return dist is not None and len(dist) > MAX_DIST_LENGTH


@dataclass(frozen=True, slots=True)
class ResolvedReleases:
    releases: dict[tuple[int, str], Release]
    dists: dict[tuple[int, str], int]


def resolve_releases(
    jobs: Sequence[Job], projects: Mapping[int, Project], storage: StorageAPI
) -> ResolvedReleases:
    """Get or create the batch's releases and dists; changes no job. Raises TransientError."""
    requests = release_requests(jobs, projects)
    if not requests:
        return ResolvedReleases({}, {})
    releases = storage.releases(requests)
    dist_requests: dict[tuple[int, str], DistributionRequest] = {}
    for job in jobs:
        if not job.release or not job.dist or dist_too_long(job.dist):
            continue
        release = releases.get((job.project_id, job.release))
        if release is not None and (release.id, job.dist) not in dist_requests:
            assert job.datetime is not None
            dist_requests[(release.id, job.dist)] = DistributionRequest(
                organization_id=release.organization_id,
                release_id=release.id,
                name=job.dist,
                date_added=job.datetime,
            )
    dists = storage.distributions(list(dist_requests.values())) if dist_requests else {}
    return ResolvedReleases(releases, dists)


def apply_releases(jobs: Sequence[Job], resolved: ResolvedReleases) -> None:
    """Set release and dist ids and tags; drop dists too long to store (counted)."""
    dropped = 0
    for job in jobs:
        release = resolved.releases.get((job.project_id, job.release)) if job.release else None
        if release is None:
            continue
        job.release_id = release.id
        tags = job.tags
        assert tags is not None  # pulled out
        tags.pop("release")
        tags.set("sentry:release", release.version)
        if not job.dist:
            continue
        if dist_too_long(job.dist):
            logger.warning(
                "dist of %d characters dropped from event %s (longest allowed: %d)",
                len(job.dist),
                job.event_id,
                MAX_DIST_LENGTH,
            )
            job.data["dist"] = None
            job.dist = None
            dropped += 1
            continue
        job.dist_id = resolved.dists[(release.id, job.dist)]
        tags.pop("dist")
        tags.set("sentry:dist", job.dist)
    if dropped:
        metrics.count_warning("dist_too_long", dropped)
