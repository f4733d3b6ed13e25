"""save_generic_events: one call per batch of Jobs (reference §2), and the save step's entry.

    OccurrencePipeline.save(jobs)
      projects            storage.projects: unknown → rejected, soft-deleted → skipped
      save_generic_events
        organizations     storage.organizations: unknown → rejected, soft-deleted → skipped;
                          an unreleased group type without the organization's ingest feature
                          (storage.organization_options) → rejected
        (buffered-spans jobs: only their occurrence document is encoded and written)
        normalize         user_agent.py: the user-agent contexts (Relay ran in decode)
        pull_out          toplevel.py: release, dist, environment... and their tags (§2.0)
        releases          releases.py      (storage.releases, storage.distributions)
        event_users       users.py
        plugin_tags       plugins.py       (storage.project_options)
        interface_tags    interface_tags.py
        metadata          metadata.py + culprit.py
        environments      environments.py  (storage.environments)
        event_metrics     event_metrics.py
        nodestore         nodes.py         (storage.nodestore.set_many_encoded)
      save_issue_occurrences  issues.py + groups.py (storage.save_groups): groups found or
                          created, counted once, regressed; environment and release rows

Every step runs over the whole batch, storage is called once per kind at the step's boundary
(each step resolves what it needs from storage before any event is changed, see below), and
each step's time is exported (`consumer_save_step_duration_seconds{step=...}`), the decode and
normalize time the batch's messages took before the save included.

Runs on the save thread. Raises TransientError when storage is unavailable; every write is
idempotent, so the caller retries the whole batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

from consumer import metrics
from consumer.errors import StaleCache
from consumer.pipeline import group_types
from consumer.pipeline.environments import apply_environments, resolve_environments
from consumer.pipeline.event_metrics import apply_event_metrics
from consumer.pipeline.interface_tags import apply_interface_tags
from consumer.pipeline.issues import save_issue_occurrences
from consumer.pipeline.job import Job
from consumer.pipeline.metadata import apply_metadata
from consumer.pipeline.nodes import (
    encode_nodes,
    encode_occurrence_nodes,
    inserted_now,
    write_nodes,
)
from consumer.pipeline.normalize import user_agent_contexts
from consumer.pipeline.plugins import apply_plugin_tags
from consumer.pipeline.releases import apply_releases, resolve_releases
from consumer.pipeline.storage_api import StorageAPI
from consumer.pipeline.toplevel import pull_out
from consumer.pipeline.user_agent import UserAgentContexts
from consumer.pipeline.users import apply_event_users
from consumer.storage.models import Project

logger = logging.getLogger(__name__)


class _StepTimes:
    """Seconds per step, observed once per batch (a step may run in two phases)."""

    def __init__(self) -> None:
        self.seconds: dict[metrics.Step, float] = {}

    @contextmanager
    def __call__(self, step: metrics.Step) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started

    def add(self, step: metrics.Step, seconds: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds

    def observe(self) -> None:
        for step, seconds in self.seconds.items():
            metrics.observe_step(step, seconds)
        self.seconds.clear()


_user_agents: UserAgentContexts | None = None


def _default_user_agents() -> UserAgentContexts:
    global _user_agents
    if _user_agents is None:
        _user_agents = user_agent_contexts()
    return _user_agents


def save_generic_events(
    jobs: Sequence[Job],
    projects: Mapping[int, Project],
    storage: StorageAPI,
    *,
    user_agents: UserAgentContexts | None = None,
) -> None:
    """Save a batch of jobs whose projects are all in `projects` (live ones).

    When this returns, every job without an `outcome` is durable in the nodestore and grouped
    (`job.group`, reference sentry-issue-platform.md §1.4; a job whose occurrence cannot make
    a group is rejected, see issues.py). Jobs whose
    organization is missing are rejected (`unknown_organization`), those of a soft-deleted
    organization skipped (`organization_deleted`).

    The events are completed (user-agent contexts, pull-out: both happen once), storage is read
    and written (releases, dists, project options, environments), then the events are changed
    and encoded, then written: a TransientError before the write leaves the events as completed,
    and a retry after a failed write reuses the encoded rows.

    `user_agents` is the save thread's cache of user-agent contexts (default: the process's).
    """
    times = _StepTimes()
    try:
        with times("organizations"):
            organizations = storage.organizations(
                {projects[job.project_id].organization_id for job in jobs}
            )
        live: list[Job] = []
        for job in jobs:
            organization_id = projects[job.project_id].organization_id
            organization = organizations.get(organization_id)
            if organization is None:
                job.reject(
                    "unknown_organization",
                    f"organization {organization_id} of project {job.project_id} does not exist",
                )
            elif organization.date_deleted is not None:
                job.skip("organization_deleted")
            else:
                live.append(job)
        with times("organizations"):
            refuse_disabled_types(live, projects, storage)
        saved = [job for job in live if job.outcome is None]

        pending = [job for job in saved if job.nodes is None]
        buffered = [job for job in pending if job.buffered]
        if buffered:
            with times("nodestore"):
                encode_occurrence_nodes(buffered, storage.nodestore.compression)
        pending = [job for job in pending if not job.buffered]
        if pending:
            fresh = [job for job in pending if not job.pulled]  # not seen by an earlier attempt
            times.add("decode", sum(job.decode_seconds for job in fresh))
            times.add("normalize", sum(job.normalize_seconds for job in fresh))
            prepare_events(pending, projects, storage, times, user_agents or _default_user_agents())
        with times("nodestore"):
            write_nodes(saved, storage)
        with times("groups"):
            save_issue_occurrences(saved, projects, storage)
    finally:
        times.observe()


def refuse_disabled_types(
    jobs: Sequence[Job], projects: Mapping[int, Project], storage: StorageAPI
) -> None:
    """Reject the jobs whose group type is unreleased and not enabled for their organization
    (Sentry's `allow_ingest`, `occurrence_consumer.py:302-310`, drops them); one storage call,
    made only when the batch holds an unreleased type."""
    gated = []
    for job in jobs:
        group_type = group_types.get(job.type_id)
        assert group_type is not None, "decode refuses unregistered types"
        if group_type.ingest_feature is not None:
            gated.append((job, group_type.ingest_feature))
    if not gated:
        return
    options = storage.organization_options(
        {projects[job.project_id].organization_id for job, _ in gated},
        {feature for _, feature in gated},
    )
    for job, feature in gated:
        organization_id = projects[job.project_id].organization_id
        if options.get(organization_id, {}).get(feature) is not True:
            job.reject(
                "group_type_not_enabled",
                f"type {job.type_id} is unreleased and organization {organization_id} lacks "
                f"{feature}",
            )


StepTimer = Callable[[metrics.Step], AbstractContextManager[None]]


def prepare_events(
    jobs: Sequence[Job],
    projects: Mapping[int, Project],
    storage: StorageAPI,
    times: StepTimer,
    user_agents: UserAgentContexts,
) -> None:
    """Complete the events (user agents, §2.0), then §2.2 to §2.9 up to the encoded rows, in
    Sentry's order: the one statement of that order, which the pipeline benchmark runs too.
    `times(step)` wraps each step's work (storage reads included)."""
    with times("normalize"):
        for job in jobs:
            user_agents.apply(job.data)  # idempotent, so a retried batch may run it again
    with times("pull_out"):
        for job in jobs:
            pull_out(job)
    with times("releases"):
        releases = resolve_releases(jobs, projects, storage)
    with times("plugin_tags"):
        options = storage.project_options({job.project_id for job in jobs})
    with times("environments"):
        environments = resolve_environments(jobs, projects, storage, datetime.now(UTC))

    with times("releases"):
        apply_releases(jobs, releases)
    with times("event_users"):
        apply_event_users(jobs)
    with times("plugin_tags"):
        apply_plugin_tags(jobs, options)
    with times("interface_tags"):
        apply_interface_tags(jobs)
    with times("metadata"):
        apply_metadata(jobs)
    with times("environments"):
        apply_environments(jobs, projects, environments)
    with times("event_metrics"):
        apply_event_metrics(jobs)
    with times("nodestore"):
        encode_nodes(jobs, inserted_now(), storage.nodestore.compression)


class OccurrencePipeline:
    """The pipeline as the save thread runs it, once per batch of Jobs: resolve the projects,
    then save_generic_events."""

    def __init__(self, storage: StorageAPI, user_agents: UserAgentContexts | None = None) -> None:
        self.storage = storage
        self.user_agents = user_agents or user_agent_contexts()

    def save(self, jobs: Sequence[Job]) -> None:
        """Save a batch, marking the jobs not saved (`Job.outcome`); raises TransientError
        (retry the batch), never BadMessage.

        When PostgreSQL refuses a write made with ids from the caches (StaleCache: their rows
        are gone, Redis still holds them), the batch's cache entries are dropped and it is
        saved again at once with every id from PostgreSQL."""
        try:
            self._save(jobs)
        except StaleCache as error:
            logger.warning("%s: saving the batch again without the caches", error)
            metrics.count_cache("indexer", "stale", 1)
            project_ids = {job.project_id for job in jobs}
            organization_ids = {
                project.organization_id for project in self.storage.projects(project_ids).values()
            }
            with self.storage.verified(project_ids, organization_ids):
                self._save(jobs)

    def _save(self, jobs: Sequence[Job]) -> None:
        for job in jobs:  # a retried batch is judged afresh
            job.outcome = None
        if not jobs:
            return
        started = time.perf_counter()
        projects = self.storage.projects({job.project_id for job in jobs})
        metrics.observe_step("projects", time.perf_counter() - started)
        live_projects: dict[int, Project] = {}
        live: list[Job] = []
        for job in jobs:
            project = projects.get(job.project_id)
            if project is None:
                job.reject("unknown_project", f"project {job.project_id} does not exist")
            elif project.date_deleted is not None:
                job.skip("project_deleted")
            else:
                live_projects[project.id] = project
                live.append(job)
        if live:
            save_generic_events(live, live_projects, self.storage, user_agents=self.user_agents)
