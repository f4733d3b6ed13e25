"""Redis stopped for real (a private redis-server, killed mid-test, then started again on the same
port): lookups and writes stay correct from PostgreSQL, errors are counted, and once Redis is back
every entry it holds agrees with PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis

from consumer import metrics
from consumer.settings import Settings
from consumer.storage.admin import delete_project, set_project_option
from consumer.storage.link_cache import KEY_FORMATS
from consumer.storage.model_cache import ModelSpec, lookup_key
from consumer.storage.models import DistributionRequest, EnvironmentRequest, ReleaseRequest
from consumer.storage.project_options import cache_key as options_key
from consumer.storage.store import (
    DISTRIBUTIONS,
    ENVIRONMENT,
    ENVIRONMENTS,
    ORGANIZATION,
    PROJECT,
    RELEASES,
    Storage,
)
from consumer.storage.string_id_cache import external_key, legacy_key
from tests.integration.helpers import make_project
from tests.integration.storage.conftest import PrivateRedis, StatementCounter

NOW = datetime(2024, 7, 1, tzinfo=UTC)
CACHES = ("model", "indexer", "release_link", "environment_link", "project_options")


def errors() -> dict[str, float]:
    return {
        cache: metrics.total(metrics.CACHE_REQUESTS, cache=cache, result="error")
        for cache in CACHES
    }


def expected_entries(db: psycopg.Connection[Any], prefix: str) -> dict[str, Any]:
    """Every cache entry PostgreSQL justifies, as {physical key: expected value}."""
    expected: dict[str, Any] = {}
    for spec in (PROJECT, ORGANIZATION, ENVIRONMENT):
        for row in db.execute(spec.select.encode()).fetchall():
            model = spec.from_db(row)
            expected[f"{prefix}{spec.version}:{lookup_key(spec.name, 'id', row[0])}"] = model
            for field in spec.cache_fields[1:]:
                key = lookup_key(spec.name, field, getattr(model, field))
                expected[f"{prefix}{spec.version}:{key}"] = row[0]
    names = [
        (RELEASES, "SELECT organization_id, version, id FROM sentry_release"),
        (ENVIRONMENTS, "SELECT organization_id, name, id FROM sentry_environment"),
        (
            DISTRIBUTIONS,
            "SELECT organization_id, release_id || ':' || name, id FROM sentry_distribution",
        ),
    ]
    for use_case, query in names:
        for org_id, name, row_id in db.execute(query.encode()).fetchall():
            expected[f"{prefix}1:{legacy_key(external_key(use_case, org_id, name))}"] = row_id
    for table, column, cache in (
        ("sentry_release_project", "release_id", "release_link"),
        ("sentry_environmentproject", "environment_id", "environment_link"),
    ):
        for row_id, project_id in db.execute(
            f"SELECT {column}, project_id FROM {table}".encode()
        ).fetchall():
            expected[f"{prefix}1:{KEY_FORMATS[cache].format(row_id, project_id)}"] = 1  # type: ignore[index]
    options: dict[int, dict[str, Any]] = {}
    for (project_id,) in db.execute("SELECT id FROM sentry_project").fetchall():
        options[project_id] = {}
    for project_id, key, value in db.execute(
        "SELECT project_id, key, value FROM sentry_projectoptions"
    ).fetchall():
        try:
            options[project_id][key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue  # not JSON (a Sentry pickle): ignored by the cache too
    for project_id, values in options.items():
        expected[f"{prefix}1:{options_key(project_id)}"] = values
    return expected


def check_cache_agrees(
    client: redis.Redis, db: psycopg.Connection[Any], prefix: str
) -> Counter[str]:
    """Assert that every entry under `prefix` says what PostgreSQL says; count them by kind."""
    expected = expected_entries(db, prefix)
    kinds: Counter[str] = Counter()
    for raw_key in client.scan_iter(match=f"{prefix}*", count=1000):
        assert isinstance(raw_key, bytes)
        key = raw_key.decode()
        value = client.get(key)
        assert isinstance(value, bytes)
        assert key in expected, f"{key} has no row behind it"
        want = expected[key]
        if ":modelcache:" in key and isinstance(want, int):
            assert int(value) == want, key
            kinds["pointer"] += 1
        elif ":modelcache:" in key:
            specs: dict[str, ModelSpec[Any]] = {
                "Project": PROJECT,
                "Organization": ORGANIZATION,
                "Environment": ENVIRONMENT,
            }
            spec = specs[key.split(":modelcache:")[1].split(":")[0]]
            assert spec.decode(value) == want, key
            kinds["model"] += 1
        elif ":indexer:" in key:
            assert int(value) == want, key
            kinds["indexer"] += 1
        elif ":sentry_projectoptions:" in key:
            assert orjson.loads(value) == want, key
            kinds["options"] += 1
        else:
            assert value == b"1", key
            kinds["link"] += 1
    return kinds


def test_redis_down_then_back(
    private_settings: Settings,
    private_redis: PrivateRedis,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    database_url: str,
    unique: str,
) -> None:
    storage = Storage.open(private_settings, configure=statements.configure)
    # After a failure Redis is left alone for `retry_interval`; this clock says when that ends.
    clock = [0.0]
    storage.redis.clock = lambda: clock[0]
    client = redis.Redis.from_url(private_redis.url)
    prefix = private_settings.redis.key_prefix
    try:
        org_id, p1 = make_project(db, unique)
        _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
        slug = f"org-{unique}"

        # Redis up: warm every cache.
        storage.projects([p1, p2])
        storage.organization_cache.get_from_cache(slug=slug)
        storage.project_options([p1, p2])
        warm = storage.releases(
            [ReleaseRequest(org_id, p1, None, f"w@{i}", NOW) for i in range(10)]
        )
        storage.environments([EnvironmentRequest(org_id, p1, "warm", NOW)])
        storage.distributions([DistributionRequest(org_id, warm[(p1, "w@1")].id, "d", NOW)])
        assert client.dbsize() > 0

        private_redis.kill()
        before = errors()

        # Lookups come from PostgreSQL.
        with statements.measure() as sent:
            projects = storage.projects([p1, p2])
        assert len(sent) == 1
        assert projects[p1].slug == f"proj-{unique}" and projects[p1].flags == 1
        assert projects[p2].flags == 0
        assert storage.organization_cache.get_from_cache(slug=slug) is not None
        assert storage.organizations([org_id])[org_id].slug == slug

        # Admin writes commit; the evictions they could not do are reported.
        assert set_project_option(storage, p1, "mail:enabled", True) is False
        assert storage.project_options([p1, p2]) == {p1: {"mail:enabled": True}, p2: {}}
        deleted = delete_project(storage, p2)
        assert deleted is not None and deleted.evicted is False
        assert storage.project_cache.get_from_cache(id=p2) is None
        assert storage.projects([p2])[p2].date_deleted == deleted.row.date_deleted

        # Get-or-create: old names, new names, a project never linked.
        _, p3 = make_project(db, f"{unique}c", org_slug=slug)
        requests = [
            ReleaseRequest(org_id, project, None, f"{kind}@{i}", NOW)
            for project in (p1, p3)
            for kind in ("w", "new")
            for i in range(10)
        ]
        releases = storage.releases(requests)
        assert len(releases) == 40
        assert releases[(p1, "w@3")].id == warm[(p1, "w@3")].id == releases[(p3, "w@3")].id
        db_releases = dict(
            db.execute(
                "SELECT version, id FROM sentry_release WHERE organization_id = %s", (org_id,)
            ).fetchall()
        )
        assert {key: r.id for key, r in releases.items()} == {
            (project, version): db_releases[version] for project, version in releases
        }
        linked = set(
            db.execute("SELECT release_id, project_id FROM sentry_release_project").fetchall()
        )
        assert {(r.id, project) for (project, _), r in releases.items()} <= linked
        envs = storage.environments(
            [EnvironmentRequest(org_id, p3, name, NOW) for name in ("warm", "cold")]
        )
        env_links = set(
            db.execute(
                "SELECT environment_id, project_id FROM sentry_environmentproject"
            ).fetchall()
        )
        assert {(env.id, p3) for env in envs.values()} <= env_links
        dists = storage.distributions(
            [DistributionRequest(org_id, warm[(p1, "w@1")].id, name, NOW) for name in ("d", "e")]
        )
        assert (
            dists[(warm[(p1, "w@1")].id, "d")]
            == dict(
                db.execute(
                    "SELECT name, id FROM sentry_distribution WHERE release_id = %s",
                    (warm[(p1, "w@1")].id,),
                ).fetchall()
            )["d"]
        )
        assert len(dists) == 2

        failed = {cache: errors()[cache] - before[cache] for cache in CACHES}
        assert all(count > 0 for count in failed.values()), failed

        # Redis is back (empty, as after a restart): the same calls fill it with true entries.
        private_redis.start()
        assert storage.projects([p1]) and errors()["model"] > before["model"] + failed["model"]
        clock[0] += private_settings.redis.retry_interval  # the first call after the interval
        failed = {cache: errors()[cache] - before[cache] for cache in CACHES}
        assert storage.projects([p1, p2, p3])[p2].date_deleted is not None
        assert storage.organization_cache.get_from_cache(slug=slug) is not None
        assert storage.project_options([p1, p2, p3])[p1] == {"mail:enabled": True}
        assert {k: r.id for k, r in storage.releases(requests).items()} == {
            k: r.id for k, r in releases.items()
        }
        storage.environments(
            [EnvironmentRequest(org_id, p3, name, NOW) for name in ("warm", "cold")]
        )
        storage.distributions(
            [DistributionRequest(org_id, warm[(p1, "w@1")].id, name, NOW) for name in ("d", "e")]
        )
        still_failed = {cache: errors()[cache] - before[cache] for cache in CACHES}
        assert still_failed == failed  # no error once it is back

        kinds = check_cache_agrees(client, db, prefix)
        assert set(kinds) == {"pointer", "model", "indexer", "options", "link"}, kinds
        assert kinds["indexer"] >= 20 + 2 + 2
        with statements.measure() as sent:
            storage.releases(requests)
            storage.projects([p1, p2, p3])
        assert sent == []
    finally:
        client.close()
        storage.close()
