"""Environments (reference §2.7, Sentry's `_get_or_create_environment_many`).

Every event gets an environment: its own name, or the organization's "" environment when it has
none. One request per (project, name) in the batch; storage gets or creates the environment
(`date_added` = now, as Django's model default gives it) and links it to the project. No tag
changes here: the `environment` tag was set when the event was pulled apart (§2.0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from consumer.storage.models import Environment, EnvironmentRequest, Project

if TYPE_CHECKING:
    from consumer.pipeline.job import Job
    from consumer.pipeline.storage_api import StorageAPI


def environment_name(job: Job) -> str:
    return job.environment or ""


def environment_requests(
    jobs: Sequence[Job], projects: Mapping[int, Project], now: datetime
) -> list[EnvironmentRequest]:
    seen: dict[tuple[int, str], EnvironmentRequest] = {}
    for job in jobs:
        key = (job.project_id, environment_name(job))
        if key not in seen:
            seen[key] = EnvironmentRequest(
                organization_id=projects[job.project_id].organization_id,
                project_id=job.project_id,
                name=key[1],
                date_added=now,
            )
    return list(seen.values())


def resolve_environments(
    jobs: Sequence[Job], projects: Mapping[int, Project], storage: StorageAPI, now: datetime
) -> dict[tuple[int, str], Environment]:
    """`{(organization_id, name): Environment}`; changes no job. Raises TransientError."""
    if not jobs:
        return {}
    return storage.environments(environment_requests(jobs, projects, now))


def apply_environments(
    jobs: Sequence[Job],
    projects: Mapping[int, Project],
    environments: Mapping[tuple[int, str], Environment],
) -> None:
    for job in jobs:
        organization_id = projects[job.project_id].organization_id
        job.environment_id = environments[(organization_id, environment_name(job))].id
