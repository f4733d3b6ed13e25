"""The storage facade the pipeline uses: every call is batch-wide and bounded in statements.

Built once per worker process from the settings; owns the PostgreSQL pool, the Redis client and
the caches. Redis is a cache only (CONTRACT §5): when it fails, calls count the error, treat it
as a miss and go on against PostgreSQL. PostgreSQL failures raise TransientError.

    store = Storage.open(settings)
    projects = store.projects([1, 2, 3])            # projects by id (model cache), deleted too
    orgs = store.organizations({p.organization_id for p in projects.values()})
    options = store.project_options([1, 2])         # {project_id: {key: json value}}
    releases = store.releases([ReleaseRequest(...)])          # {(project_id, version): Release}
    dists = store.distributions([DistributionRequest(...)])   # {(release_id, name): id}
    envs = store.environments([EnvironmentRequest(...)])      # {(organization_id, name): Environment}
    store.nodestore.set_many_encoded([(node_id, data), ...])
    infos = store.save_groups([IssueOccurrence(...)], fold)   # {(project_id, occurrence_id): GroupInfo}
    store.close()

Statements per call, whatever the batch size (a name or link found in its cache costs none):

* `projects`, `organizations`, `environments_by_id`, `project_options`: at most 1 query;
* `releases`: at most 4 (the get-or-create, a read-back when a concurrent worker raced it, the
  missing links, the `has_releases` flag of projects lacking it), plus the one query of
  `projects` for projects neither seen by `projects()` in this process nor cached;
* `distributions`: at most 2 (get-or-create, read-back);
* `environments`: at most 3 (get-or-create, read-back, missing links);
* `save_groups`: at most 16, in one transaction (`group_rows` lists them).

Redis round trips per call: one per cache read, one per cache written, each batch-wide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from consumer import metrics
from consumer.errors import StaleCache
from consumer.settings import Settings
from consumer.storage import (
    distribution_rows,
    environment_rows,
    group_rows,
    organization_options,
    release_rows,
)
from consumer.storage.link_cache import LinkCache
from consumer.storage.model_cache import ModelCache, ModelSpec
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
from consumer.storage.nodestore import Compression, NodeStore
from consumer.storage.pool import connection, create_pool, transaction
from consumer.storage.project_options import ProjectOptions
from consumer.storage.redis_cache import RedisCache
from consumer.storage.string_id_cache import BULK_RECORD, StringIdCache, external_key

logger = logging.getLogger(__name__)

# The models of the model cache and their cache fields (reference §3.1).
PROJECT = ModelSpec("Project", "sentry_project", Project, ("id",))
ORGANIZATION = ModelSpec("Organization", "sentry_organization", Organization, ("id", "slug"))
ENVIRONMENT = ModelSpec("Environment", "sentry_environment", Environment, ("id",))

# Use cases of the string-to-id cache. Distributions are cached too, although Sentry does not
# cache them: a (release, name) pair never changes its id, and it keeps cached batches SQL-free.
RELEASES = "releases"
ENVIRONMENTS = "environments"
DISTRIBUTIONS = "distributions"


class Storage:
    """PostgreSQL and Redis behind batch-wide calls. Thread-safe; every call blocks.

    Raises TransientError when PostgreSQL is unreachable (the batch is retried); never raises
    for Redis (see the module docstring)."""

    nodestore: NodeStore

    def __init__(
        self, settings: Settings, pool: psycopg_pool.ConnectionPool, redis: RedisCache
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.nodestore = NodeStore(
            pool,
            compression=Compression(
                settings.worker.nodestore_compressor, settings.worker.nodestore_compression_level
            ),
        )
        r = settings.redis
        self.project_cache = ModelCache(PROJECT, redis, pool, r.model_cache_ttl)
        self.organization_cache = ModelCache(ORGANIZATION, redis, pool, r.model_cache_ttl)
        self.environment_cache = ModelCache(ENVIRONMENT, redis, pool, r.model_cache_ttl)
        self.strings = StringIdCache(
            redis,
            ttl=r.indexer_ttl,
            read_namespaced=r.indexer_read_namespaced,
            write_namespaced=r.indexer_write_namespaced,
        )
        self.release_links = LinkCache(redis, "release_link", r.link_cache_ttl)
        self.environment_links = LinkCache(redis, "environment_link", r.link_cache_ttl)
        self.options = ProjectOptions(redis, pool, r.project_options_ttl)
        # Projects known to have the has_releases flag; the flag is never cleared.
        self._has_releases: set[int] = set()
        # While set (`verified`), ids are read from PostgreSQL only, never from Redis.
        self._bypass_cache = False

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        configure: Callable[[psycopg.Connection[Any]], None] | None = None,
    ) -> Storage:
        """Open the pool and the Redis client; TransientError when PostgreSQL is unreachable.
        `configure` runs on every new PostgreSQL connection (tests use it to count statements).
        """
        pool = create_pool(settings.database, configure=configure)
        return cls(settings, pool, RedisCache.from_settings(settings.redis))

    def close(self) -> None:
        self.pool.close()
        self.redis.close()

    @contextmanager
    def verified(
        self, project_ids: Iterable[int], organization_ids: Iterable[int]
    ) -> Iterator[None]:
        """After StaleCache: drop the cached projects and organizations given, and within the
        block resolve every release, distribution and environment id from PostgreSQL (the
        fresh ids then replace the stale cache entries)."""
        projects = set(project_ids)
        self.project_cache.uncache(projects)
        self.organization_cache.uncache(set(organization_ids))
        self._has_releases -= projects
        self._bypass_cache = True
        try:
            yield
        finally:
            self._bypass_cache = False

    @contextmanager
    def _cached_ids_write(self, what: str) -> Iterator[None]:
        """A write that may use cached ids: its ForeignKeyViolation means they are stale."""
        try:
            yield
        except psycopg.errors.ForeignKeyViolation as error:
            if self._bypass_cache:
                raise  # not the cache's doing
            raise StaleCache(f"{what}: PostgreSQL refused ids from the cache: {error}") from error

    # ------------------------------------------------------------------ model cache lookups

    def projects(self, ids: Iterable[int]) -> dict[int, Project]:
        """Projects by id through the model cache, one Redis round trip and at most one query.
        Missing ids are absent from the result; soft-deleted projects are returned with
        `date_deleted` set (the caller skips them) so that "deleted" and "unknown" differ."""
        found = self.project_cache.get_many_from_cache(ids, with_deleted=True)
        self._has_releases.update(
            pid for pid, project in found.items() if (project.flags or 0) & Project.HAS_RELEASES
        )
        return found

    def organizations(self, ids: Iterable[int]) -> dict[int, Organization]:
        """Organizations by id through the model cache (same rules as `projects`)."""
        return self.organization_cache.get_many_from_cache(ids, with_deleted=True)

    def environments_by_id(self, ids: Iterable[int]) -> dict[int, Environment]:
        """Environments by id through the model cache (one round trip, at most one query)."""
        return self.environment_cache.get_many_from_cache(ids)

    def organization_options(
        self, organization_ids: Iterable[int], keys: Iterable[str]
    ) -> dict[int, dict[str, Any]]:
        """The options asked of each organization that has them (`sentry_organizationoptions`,
        JSON values); one query, uncached."""
        with connection(self.pool) as conn:
            return organization_options.get_many(conn, organization_ids, keys)

    def project_options(self, project_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """All options of each project (`sentry_projectoptions`, JSON values), cached; every
        id asked is in the result (an empty dict for a project without options)."""
        return self.options.get_many(project_ids)

    # ------------------------------------------------------------------ get-or-create

    def releases(self, requests: Sequence[ReleaseRequest]) -> dict[tuple[int, str], Release]:
        """Get or create releases and guarantee every (release, project) link; set the
        has_releases flag of projects that lack it. Invalid versions (Sentry's
        `Release.is_valid_version`, or longer than the column) are left out of the result:
        no release, no link. Requests for the same (project, version) may repeat; the latest
        `date_added` is the new release's date.

        A version cached in the string-to-id cache resolves without SQL (its Release then has
        `date_added=None`); its link is checked in the link cache and inserted when not known.
        """
        wanted: dict[tuple[int, str], release_rows.Wanted] = {}
        for request in requests:
            version = request.version
            if (
                not release_rows.is_valid_version(version)
                or len(version) > release_rows.MAX_VERSION_LENGTH
            ):
                logger.debug("not a valid release version: %r", version)
                continue
            key = (request.project_id, version)
            previous = wanted.get(key)
            if previous is None or request.date_added > previous.date_added:
                wanted[key] = release_rows.Wanted(
                    request.organization_id,
                    request.project_id,
                    request.project_slug,
                    version,
                    request.date_added,
                )
        if not wanted:
            return {}

        cached = (
            {}
            if self._bypass_cache
            else self.strings.get_many(
                BULK_RECORD,
                (external_key(RELEASES, w.organization_id, w.version) for w in wanted.values()),
            )
        )
        result: dict[tuple[int, str], Release] = {}
        pending: list[release_rows.Wanted] = []
        for key, item in wanted.items():
            release_id = cached.get(external_key(RELEASES, item.organization_id, item.version))
            if release_id is None:
                pending.append(item)
            else:
                result[key] = Release(release_id, item.organization_id, item.version)
        hit_pairs = {(release.id, project_id) for (project_id, _), release in result.items()}
        to_link = self.release_links.missing(hit_pairs) if hit_pairs else set()
        lacking_flag = self._lacking_has_releases({item.project_id for item in wanted.values()})

        known_links: set[tuple[int, int]] = set()
        learned: dict[str, int] = {}
        flagged: list[Project] = []
        created = linked = 0
        if pending or to_link or lacking_flag:
            with self._cached_ids_write("releases"), connection(self.pool) as conn:
                if pending:
                    resolved, _ = release_rows.resolve(conn, pending)
                    created = len(resolved.created)
                    for index, item in enumerate(pending):
                        release = resolved.linked.get(index)
                        if release is not None:
                            known_links.add((release.id, item.project_id))
                        else:
                            release = resolved.by_name.get((item.organization_id, item.version))
                            if release is None:  # deleted between insert and read-back
                                logger.warning("release %r vanished while resolved", item.version)
                                continue
                            to_link.add((release.id, item.project_id))
                        result[(item.project_id, item.version)] = release
                        if release.version == item.version:
                            name = external_key(RELEASES, item.organization_id, item.version)
                            learned[name] = release.id
                if to_link:
                    linked = release_rows.link(conn, to_link)
                lacking_flag &= {project_id for project_id, _ in result}
                if lacking_flag:
                    rows = release_rows.flag_has_releases(conn, lacking_flag, PROJECT.fields)
                    flagged = [PROJECT.from_db(row) for row in rows]
        metrics.count_rows("sentry_release", created)
        metrics.count_rows("sentry_release_project", linked)
        metrics.count_rows("sentry_project", len(flagged))

        # Caches last: every entry now describes committed rows.
        if lacking_flag:
            self._has_releases |= lacking_flag
            self.project_cache.post_save(flagged)
            # Flagged meanwhile by another worker: the cached row may lack the flag.
            self.project_cache.uncache(lacking_flag - {project.id for project in flagged})
        self.strings.set_many(BULK_RECORD, learned)
        self.release_links.remember(to_link | known_links)
        return result

    def _lacking_has_releases(self, project_ids: set[int]) -> set[int]:
        """The projects whose has_releases flag is not known to be set (model cache)."""
        unknown = project_ids - self._has_releases
        if unknown:
            self.projects(unknown)
        return project_ids - self._has_releases

    def distributions(self, requests: Sequence[DistributionRequest]) -> dict[tuple[int, str], int]:
        """Get or create distributions; `{(release_id, name): distribution id}`. A name that is
        empty or longer than the column (64) is skipped with a warning (CONTRACT §9.5: the
        pipeline drops such dists first). Ids are cached in the string-to-id cache."""
        valid: list[DistributionRequest] = []
        for request in requests:
            if not request.name or len(request.name) > distribution_rows.MAX_NAME_LENGTH:
                logger.warning("distribution name %r does not fit; skipped", request.name[:80])
                continue
            valid.append(request)
        if not valid:
            return {}

        def cache_key(request: DistributionRequest) -> str:
            name = f"{request.release_id}:{request.name}"
            return external_key(DISTRIBUTIONS, request.organization_id, name)

        cached = (
            {}
            if self._bypass_cache
            else self.strings.get_many(BULK_RECORD, (cache_key(r) for r in valid))
        )
        result: dict[tuple[int, str], int] = {}
        pending: list[DistributionRequest] = []
        for request in valid:
            dist_id = cached.get(cache_key(request))
            if dist_id is None:
                pending.append(request)
            else:
                result[(request.release_id, request.name)] = dist_id
        if pending:
            with self._cached_ids_write("distributions"), connection(self.pool) as conn:
                found, created, _ = distribution_rows.resolve(conn, pending)
            metrics.count_rows("sentry_distribution", created)
            result.update(found)
            self.strings.set_many(
                BULK_RECORD,
                {
                    cache_key(request): found[(request.release_id, request.name)]
                    for request in pending
                    if (request.release_id, request.name) in found
                },
            )
        return result

    def environments(
        self, requests: Sequence[EnvironmentRequest]
    ) -> dict[tuple[int, str], Environment]:
        """Get or create environments (the empty name for none) and every environment-project
        link; `{(organization_id, name): Environment}`. A name longer than the column (64) is
        skipped with a warning. As in Sentry, a new environment's `date_added` is the time it
        is created (the request's `date_added` is not used). An environment resolved from the
        string-to-id cache has `date_added=None`."""
        names: dict[tuple[int, str], set[int]] = {}
        for request in requests:
            if len(request.name) > environment_rows.MAX_NAME_LENGTH:
                logger.warning("environment name %r does not fit; skipped", request.name[:80])
                continue
            names.setdefault((request.organization_id, request.name), set()).add(request.project_id)
        if not names:
            return {}
        cached = (
            {}
            if self._bypass_cache
            else self.strings.get_many(
                BULK_RECORD, (external_key(ENVIRONMENTS, org, name) for org, name in names)
            )
        )
        result: dict[tuple[int, str], Environment] = {}
        pending: list[tuple[int, str]] = []
        for org, name in names:
            env_id = cached.get(external_key(ENVIRONMENTS, org, name))
            if env_id is None:
                pending.append((org, name))
            else:
                result[(org, name)] = Environment(env_id, org, name)
        hit_pairs = {(result[key].id, pid) for key in result for pid in names[key]}
        to_link = self.environment_links.missing(hit_pairs) if hit_pairs else set()

        created: list[Environment] = []
        linked = 0
        if pending or to_link:
            with self._cached_ids_write("environments"), connection(self.pool) as conn:
                if pending:
                    found, created_ids, _ = environment_rows.resolve(conn, pending)
                    result.update(found)
                    created = [env for env in found.values() if env.id in created_ids]
                    to_link |= {
                        (found[key].id, pid)
                        for key in pending
                        if key in found
                        for pid in names[key]
                    }
                if to_link:
                    linked = environment_rows.link(conn, to_link)
        metrics.count_rows("sentry_environment", len(created))
        metrics.count_rows("sentry_environmentproject", linked)

        if pending:
            self.strings.set_many(
                BULK_RECORD,
                {
                    external_key(ENVIRONMENTS, org, name): result[(org, name)].id
                    for org, name in pending
                    if (org, name) in result
                },
            )
            self.environment_cache.post_save(created)
        self.environment_links.remember(to_link)
        return result

    # ------------------------------------------------------------------ groups

    def save_groups(
        self, occurrences: Sequence[IssueOccurrence], fold: Fold
    ) -> dict[OccurrenceKey, GroupInfo]:
        """Find or create the group of every occurrence and count those not counted before,
        in one transaction (`group_rows.save`); `{(project_id, occurrence_id): GroupInfo}`,
        an occurrence absent when a hash row without a group blocks it. TransientError rolls
        everything back, counts included."""
        if not occurrences:
            return {}
        with self._cached_ids_write("groups"), transaction(self.pool) as conn:
            infos, written = group_rows.save(conn, occurrences, fold)
        metrics.count_rows("sentry_groupedmessage", written.groups_created)
        metrics.count_rows("sentry_grouphash", written.groups_created + written.hashes)
        metrics.count_rows("sentry_groupenvironment", written.group_environments)
        metrics.count_rows("sentry_grouprelease", written.group_releases)
        metrics.count_rows("sentry_activity", written.regressions)
        metrics.count_rows("sentry_grouphistory", written.regressions)
        metrics.count_groups("created", written.groups_created)
        metrics.count_groups("updated", written.groups_updated)
        metrics.count_groups("regressed", written.regressions)
        return infos
