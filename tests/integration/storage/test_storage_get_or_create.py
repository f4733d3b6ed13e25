"""Set-based get-or-create of releases, links, distributions and environments on the real
PostgreSQL and Redis: Sentry's semantics (reference §2.2, §2.7) and the statement counts."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
import redis

from consumer import metrics
from consumer.settings import Settings
from consumer.storage.models import (
    DistributionRequest,
    EnvironmentRequest,
    ReleaseRequest,
)
from consumer.storage.pool import APPLICATION_NAME
from consumer.storage.store import PROJECT, Storage
from tests.integration.helpers import make_project
from tests.integration.storage.conftest import StatementCounter
from tests.integration.storage.test_storage_model_cache import pk_key

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def release_rows(db: psycopg.Connection[Any], org_id: int) -> dict[str, tuple[Any, ...]]:
    rows = db.execute(
        """SELECT version, id, date_added, data, new_groups, commit_count, total_deploys, status,
                  package, major, minor, patch, revision, prerelease, build_code, build_number
           FROM sentry_release WHERE organization_id = %s""",
        (org_id,),
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def links(db: psycopg.Connection[Any], table: str, column: str) -> set[tuple[int, int]]:
    return {
        (row[0], row[1])
        for row in db.execute(f"SELECT {column}, project_id FROM {table}").fetchall()
    }


def test_releases_are_created_like_sentrys(
    storage: Storage, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
    later = NOW + timedelta(minutes=5)
    requests = [
        ReleaseRequest(org_id, p1, f"proj-{unique}", "backend@1.4.0+42", NOW),
        ReleaseRequest(org_id, p1, f"proj-{unique}", "backend@1.4.0+42", later),
        ReleaseRequest(org_id, p2, f"proj-{unique}b", "backend@1.4.0+42", NOW),
        ReleaseRequest(org_id, p1, f"proj-{unique}", "abc123", NOW),
        ReleaseRequest(org_id, p1, f"proj-{unique}", "latest", NOW),
        ReleaseRequest(org_id, p1, f"proj-{unique}", "a/b", NOW),
        ReleaseRequest(org_id, p1, f"proj-{unique}", "  ", NOW),
    ]
    written = metrics.total(metrics.ROWS_WRITTEN, table="sentry_release")
    result = storage.releases(requests)

    assert set(result) == {(p1, "backend@1.4.0+42"), (p2, "backend@1.4.0+42"), (p1, "abc123")}
    assert result[(p1, "backend@1.4.0+42")] == result[(p2, "backend@1.4.0+42")]
    rows = release_rows(db, org_id)
    assert set(rows) == {"backend@1.4.0+42", "abc123"}  # invalid versions: no release
    semver = rows["backend@1.4.0+42"]
    assert semver[0] == result[(p1, "backend@1.4.0+42")].id
    assert semver[1] == later  # the latest event of the first (project, version) group
    assert semver[2:7] == ("{}", 0, 0, 0, 0)
    assert semver[7:] == ("backend", 1, 4, 0, 0, "", "42", 42)
    assert rows["abc123"][7:] == (None,) * 8
    assert metrics.total(metrics.ROWS_WRITTEN, table="sentry_release") - written == 2

    release_links = links(db, "sentry_release_project", "release_id")
    assert {
        (result[(p1, "backend@1.4.0+42")].id, p1),
        (result[(p2, "backend@1.4.0+42")].id, p2),
        (result[(p1, "abc123")].id, p1),
    } <= release_links
    flags = dict(db.execute("SELECT id, flags FROM sentry_project WHERE id IN (%s, %s)", (p1, p2)))
    assert flags == {p1: 1, p2: 1}


def test_cached_batches_cost_no_sql(
    storage: Storage, statements: StatementCounter, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, project_id = make_project(db, unique)
    storage.projects([project_id])
    storage.organizations([org_id])
    releases = [ReleaseRequest(org_id, project_id, None, f"v{i}", NOW) for i in range(50)]
    environments = [EnvironmentRequest(org_id, project_id, f"env{i}", NOW) for i in range(20)]
    first = storage.releases(releases)
    dists = [DistributionRequest(org_id, first[(project_id, "v1")].id, "d1", NOW)]
    first_dists = storage.distributions(dists)
    first_envs = storage.environments(environments)

    hits = metrics.total(metrics.CACHE_REQUESTS, cache="indexer", result="hit")
    with statements.measure() as sent:
        again = storage.releases(releases)
        again_dists = storage.distributions(dists)
        again_envs = storage.environments(environments)
        storage.projects([project_id])
        storage.organizations([org_id])
    assert sent == []
    assert metrics.total(metrics.CACHE_REQUESTS, cache="indexer", result="hit") - hits == 71
    assert {key: r.id for key, r in again.items()} == {key: r.id for key, r in first.items()}
    assert all(r.date_added is None and r.version == key[1] for key, r in again.items())
    assert again_dists == first_dists
    assert {k: e.id for k, e in again_envs.items()} == {k: e.id for k, e in first_envs.items()}


@pytest.mark.parametrize("size", [1, 10, 100, 1000])
def test_statements_per_batch_are_bounded_whatever_the_size(
    size: int,
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    unique: str,
) -> None:
    org_id, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
    projects = [p1, p2]
    with statements.measure() as sent:
        storage.projects(projects)
        storage.organizations([org_id])
        storage.project_options(projects)
    assert len(sent) == 3  # one query each, every row a miss

    def batch(tag: str) -> tuple[list[ReleaseRequest], list[EnvironmentRequest]]:
        return (
            [
                ReleaseRequest(org_id, projects[i % 2], None, f"{tag}@{i}.0", NOW)
                for i in range(size)
            ],
            [EnvironmentRequest(org_id, projects[i % 2], f"{tag}-{i}", NOW) for i in range(size)],
        )

    # A first batch of new names: get-or-create + links + the has_releases flag.
    releases, environments = batch("a")
    with statements.measure() as release_sql:
        resolved = storage.releases(releases)
    with statements.measure() as dist_sql:
        storage.distributions(
            [DistributionRequest(org_id, r.id, "dist-1", NOW) for r in resolved.values()]
        )
    with statements.measure() as env_sql:
        storage.environments(environments)
    assert len(resolved) == size
    assert [q.split()[0] for q in release_sql] == ["WITH", "INSERT", "WITH"]
    assert "UPDATE sentry_project" in release_sql[2]
    assert len(dist_sql) == 1
    assert [q.split()[0] for q in env_sql] == ["WITH", "INSERT"]

    # Another batch of new names: the flag is known to be set now.
    releases, environments = batch("b")
    with statements.measure() as release_sql:
        storage.releases(releases)
    with statements.measure() as env_sql:
        storage.environments(environments)
    assert len(release_sql) == 2
    assert len(env_sql) == 2

    # The same batch again: everything cached, nothing sent.
    with statements.measure() as warm:
        storage.releases(releases)
        storage.environments(environments)
        storage.projects(projects)
        storage.organizations([org_id])
        storage.project_options(projects)
    assert warm == []


def test_a_release_cached_by_one_project_is_still_linked_to_another(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
    storage.projects([p1, p2])
    release = storage.releases([ReleaseRequest(org_id, p1, None, "web@2.0", NOW)])[(p1, "web@2.0")]
    assert storage.projects([p2])[p2].flags == 0
    with statements.measure() as sent:
        other = storage.releases([ReleaseRequest(org_id, p2, None, "web@2.0", NOW)])
    assert other[(p2, "web@2.0")].id == release.id  # from the org-wide string-to-id cache
    assert len(sent) == 2  # the link (CONTRACT §9.2) and p2's has_releases flag
    assert (release.id, p2) in links(db, "sentry_release_project", "release_id")
    # The flag change refreshed p2's model-cache entry.
    cached = orjson.loads(redis_client.get(pk_key(settings, PROJECT, p2)) or b"")
    assert cached["flags"] == 1
    with statements.measure() as sent:
        storage.releases([ReleaseRequest(org_id, p2, None, "web@2.0", NOW)])
    assert sent == []


def test_a_legacy_project_release_linked_to_the_project_is_preferred(
    storage: Storage, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
    slug = f"proj-{unique}"
    legacy = db.execute(
        """INSERT INTO sentry_release (organization_id, version, date_added, data)
           VALUES (%s, %s, now(), '{}') RETURNING id""",
        (org_id, f"{slug}-3.1"),
    ).fetchone()
    plain = db.execute(
        """INSERT INTO sentry_release (organization_id, version, date_added, data)
           VALUES (%s, '3.1', now(), '{}') RETURNING id""",
        (org_id,),
    ).fetchone()
    assert legacy is not None and plain is not None
    db.execute(
        "INSERT INTO sentry_release_project (project_id, release_id) VALUES (%s, %s), (%s, %s)",
        (p1, legacy[0], p1, plain[0]),
    )
    result = storage.releases(
        [
            ReleaseRequest(org_id, p1, slug, "3.1", NOW),
            ReleaseRequest(org_id, p2, f"proj-{unique}b", "3.1", NOW),
        ]
    )
    assert result[(p1, "3.1")].id == legacy[0]
    assert result[(p1, "3.1")].version == f"{slug}-3.1"
    # p2 has no link to either: the org's "3.1" is reused (Sentry's IntegrityError path) and linked.
    assert result[(p2, "3.1")].id == plain[0]
    assert (plain[0], p2) in links(db, "sentry_release_project", "release_id")
    assert set(release_rows(db, org_id)) == {f"{slug}-3.1", "3.1"}


def _wait_until_blocked(db: psycopg.Connection[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(
            """SELECT count(*) FROM pg_stat_activity
               WHERE application_name = %s AND datname = current_database()
                 AND wait_event_type = 'Lock'""",
            (APPLICATION_NAME,),
        ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the get-or-create never waited for the concurrent insert")


def test_a_concurrent_insert_is_read_back(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    database_url: str,
    unique: str,
) -> None:
    """Another worker inserts the same names and commits while our statement runs: the insert
    waits for it, skips the conflict, and the read-back finds its rows (IntegrityError path)."""
    org_id, project_id = make_project(db, unique)
    storage.projects([project_id])
    with psycopg.connect(database_url) as rival:
        release = rival.execute(
            """INSERT INTO sentry_release (organization_id, version, date_added, data)
               VALUES (%s, 'race@1.0', now(), '{}') RETURNING id""",
            (org_id,),
        ).fetchone()
        env = rival.execute(
            """INSERT INTO sentry_environment (organization_id, name, date_added)
               VALUES (%s, 'race', now()) RETURNING id""",
            (org_id,),
        ).fetchone()
        assert release is not None and env is not None
        results: dict[str, Any] = {}

        def resolve() -> None:
            with statements.measure() as sent:
                results["releases"] = storage.releases(
                    [
                        ReleaseRequest(org_id, project_id, None, "race@1.0", NOW),
                        ReleaseRequest(org_id, project_id, None, "calm@1.0", NOW),
                    ]
                )
                results["environments"] = storage.environments(
                    [EnvironmentRequest(org_id, project_id, "race", NOW)]
                )
            results["sent"] = sent

        thread = threading.Thread(target=resolve)
        thread.start()
        _wait_until_blocked(db)
        rival.commit()
        # The environment statement runs after the rival committed; no wait, no read-back.
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert results["releases"][(project_id, "race@1.0")].id == release[0]
    assert results["environments"][(org_id, "race")].id == env[0]
    sent = results["sent"]
    assert [q.split()[0] for q in sent[:3]] == ["WITH", "SELECT", "INSERT"]
    assert "JOIN unnest" in sent[1]  # the read-back
    assert (release[0], project_id) in links(db, "sentry_release_project", "release_id")
    assert (env[0], project_id) in links(db, "sentry_environmentproject", "environment_id")
    assert len(release_rows(db, org_id)) == 2


def test_distributions(
    storage: Storage, statements: StatementCounter, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, project_id = make_project(db, unique)
    release = storage.releases([ReleaseRequest(org_id, project_id, None, "1.0", NOW)])[
        (project_id, "1.0")
    ]
    later = NOW + timedelta(hours=1)
    requests = [
        DistributionRequest(org_id, release.id, "android", NOW),
        DistributionRequest(org_id, release.id, "android", later),
        DistributionRequest(org_id, release.id, "x" * 65, NOW),  # too long for the column
        DistributionRequest(org_id, release.id, "", NOW),
        DistributionRequest(org_id, release.id, "ios", later),
    ]
    with statements.measure() as sent:
        result = storage.distributions(requests)
    assert len(sent) == 1
    assert set(result) == {(release.id, "android"), (release.id, "ios")}
    rows = db.execute(
        "SELECT id, name, organization_id, date_added FROM sentry_distribution WHERE release_id = %s",
        (release.id,),
    ).fetchall()
    assert {(row[0], row[1]) for row in rows} == {
        (result[(release.id, "android")], "android"),
        (result[(release.id, "ios")], "ios"),
    }
    assert {row[1]: row[3] for row in rows} == {"android": NOW, "ios": later}
    assert all(row[2] == org_id for row in rows)
    with statements.measure() as sent:
        assert storage.distributions(requests) == result
    assert sent == []


def test_environments(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
    before = datetime.now(UTC)
    result = storage.environments(
        [
            EnvironmentRequest(org_id, p1, "", NOW),
            EnvironmentRequest(org_id, p2, "", NOW),
            EnvironmentRequest(org_id, p1, "production", NOW),
            EnvironmentRequest(org_id, p1, "e" * 65, NOW),
        ]
    )
    assert set(result) == {(org_id, ""), (org_id, "production")}
    env = result[(org_id, "")]
    assert env.date_added is not None and env.date_added >= before  # creation time, as Sentry
    assert {(env.id, p1), (env.id, p2), (result[(org_id, "production")].id, p1)} == {
        pair
        for pair in links(db, "sentry_environmentproject", "environment_id")
        if pair[1] in (p1, p2)
    }
    assert redis_client.get(f"{settings.redis.key_prefix}1:envproj:c:{env.id}:{p2}") == b"1"
    ttl = redis_client.ttl(f"{settings.redis.key_prefix}1:envproj:c:{env.id}:{p2}")
    assert settings.redis.link_cache_ttl - 5 <= ttl <= settings.redis.link_cache_ttl

    # A known name, a project not linked yet: only the link is written.
    _, p3 = make_project(db, f"{unique}c", org_slug=f"org-{unique}")
    with statements.measure() as sent:
        again = storage.environments([EnvironmentRequest(org_id, p3, "production", NOW)])
    assert [q.split()[0] for q in sent] == ["INSERT"]
    assert again[(org_id, "production")].id == result[(org_id, "production")].id
    assert (again[(org_id, "production")].id, p3) in links(
        db, "sentry_environmentproject", "environment_id"
    )
