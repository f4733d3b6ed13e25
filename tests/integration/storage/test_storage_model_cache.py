"""The model cache on the real Redis and PostgreSQL: every path of reference §3 (miss, hit,
pointer hit, invalid values, eviction on save and delete, version change, TTL) and soft delete."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis

from consumer import metrics
from consumer.settings import Settings
from consumer.storage.admin import delete_organization, delete_project, rename_organization
from consumer.storage.model_cache import ModelCache, ModelSpec
from consumer.storage.models import EnvironmentRequest, Project
from consumer.storage.store import ORGANIZATION, PROJECT, Storage
from tests.integration.helpers import make_project
from tests.integration.storage.conftest import StatementCounter


def model_counts() -> dict[str, float]:
    return {
        result: metrics.total(metrics.CACHE_REQUESTS, cache="model", result=result)
        for result in ("hit", "miss", "invalid", "error")
    }


def delta(before: dict[str, float]) -> dict[str, float]:
    after = model_counts()
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def pk_key(settings: Settings, spec: ModelSpec[Any], pk: int) -> str:
    digest = hashlib.md5(f"id={pk}".encode()).hexdigest()
    return f"{settings.redis.key_prefix}{spec.version}:modelcache:{spec.name}:{digest}"


def slug_key(settings: Settings, slug: str) -> str:
    digest = hashlib.md5(f"slug={slug}".encode()).hexdigest()
    return f"{settings.redis.key_prefix}{ORGANIZATION.version}:modelcache:Organization:{digest}"


def test_miss_reads_postgres_and_pushes_json_then_hits_without_sql(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, project_id = make_project(db, unique)
    key = pk_key(settings, PROJECT, project_id)
    assert redis_client.get(key) is None

    before = model_counts()
    with statements.measure() as sent:
        first = storage.projects([project_id, 987654321])
    assert len(sent) == 1 and "FROM sentry_project" in sent[0]
    assert set(first) == {project_id}  # an unknown id is absent, not cached
    assert first[project_id].organization_id == org_id
    assert first[project_id].slug == f"proj-{unique}"
    assert delta(before) == {"miss": 2}

    cached = orjson.loads(redis_client.get(key) or b"")
    assert cached["id"] == project_id and cached["slug"] == f"proj-{unique}"
    assert cached["date_deleted"] is None
    assert redis_client.get(pk_key(settings, PROJECT, 987654321)) is None

    before = model_counts()
    with statements.measure() as sent:
        second = storage.projects([project_id])
    assert sent == []
    assert second == {project_id: first[project_id]}
    assert delta(before) == {"hit": 1}


def test_entries_carry_the_model_cache_ttl(
    storage: Storage,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, project_id = make_project(db, unique)
    storage.projects([project_id])
    storage.organization_cache.get_from_cache(slug=f"org-{unique}")
    ttl = settings.redis.model_cache_ttl
    assert ttl == 300
    for key in (
        pk_key(settings, PROJECT, project_id),
        pk_key(settings, ORGANIZATION, org_id),
        slug_key(settings, f"org-{unique}"),
    ):
        assert ttl - 5 <= redis_client.ttl(key) <= ttl


def test_pointer_hit_follows_the_slug_to_the_pk_entry(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, _ = make_project(db, unique)
    slug = f"org-{unique}"
    with statements.measure() as sent:
        org = storage.organization_cache.get_from_cache(slug=slug)
    assert org is not None and org.id == org_id
    assert len(sent) == 1
    assert redis_client.get(slug_key(settings, slug)) == str(org_id).encode()
    assert (
        orjson.loads(redis_client.get(pk_key(settings, ORGANIZATION, org_id)) or b"")["slug"]
        == slug
    )

    before = model_counts()
    with statements.measure() as sent:
        again = storage.organization_cache.get_many_from_cache([slug], key="slug")
    assert sent == []
    assert again == {slug: org}
    assert delta(before) == {"hit": 2}  # the pointer, then the pk entry


def test_invalid_cached_values_are_evicted_and_read_again(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, project_id = make_project(db, unique)
    other_org, other_project = make_project(db, f"{unique}b")
    storage.projects([other_project])
    wrong_row = redis_client.get(pk_key(settings, PROJECT, other_project))
    assert wrong_row is not None
    bad_values = [
        b"\x80\x04\x95\x10\x00pickled-model",  # what Sentry itself would store
        b"{not json",
        wrong_row,  # a valid row, but of another project
        orjson.dumps({"id": project_id}),
    ]
    for bad in bad_values:
        redis_client.set(pk_key(settings, PROJECT, project_id), bad)
        before = model_counts()
        with statements.measure() as sent:
            found = storage.projects([project_id])
        assert len(sent) == 1
        assert found[project_id].id == project_id
        assert found[project_id].slug == f"proj-{unique}"
        assert delta(before) == {"invalid": 1}
        rewritten = orjson.loads(redis_client.get(pk_key(settings, PROJECT, project_id)) or b"")
        assert rewritten["id"] == project_id

    # A pointer that is not a pk, and a pointer to a row that no longer has that slug.
    slug = f"org-{unique}"
    for bad_pointer in (b"acme", str(other_org).encode()):
        redis_client.set(slug_key(settings, slug), bad_pointer)
        before = model_counts()
        org = storage.organization_cache.get_from_cache(slug=slug)
        assert org is not None and org.id == org_id
        assert delta(before).get("invalid") == 1
        assert redis_client.get(slug_key(settings, slug)) == str(org_id).encode()


def test_saving_pushes_entries_and_evicts_the_stale_pointer(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, _ = make_project(db, unique)
    old, new = f"org-{unique}", f"renamed-{unique}"
    assert storage.organization_cache.get_from_cache(slug=old) is not None
    assert redis_client.exists(slug_key(settings, old))

    changed = rename_organization(storage, org_id, new)
    assert changed.evicted and changed.row.slug == new
    assert not redis_client.exists(slug_key(settings, old))
    assert redis_client.get(slug_key(settings, new)) == str(org_id).encode()
    assert (
        orjson.loads(redis_client.get(pk_key(settings, ORGANIZATION, org_id)) or b"")["slug"] == new
    )

    with statements.measure() as sent:
        assert storage.organization_cache.get_from_cache(slug=new) == changed.row
    assert sent == []
    assert storage.organization_cache.get_from_cache(slug=old) is None


def test_post_save_finds_old_values_in_the_cached_row(
    storage: Storage,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, _ = make_project(db, unique)
    old = f"org-{unique}"
    cached = storage.organization_cache.get_from_cache(slug=old)
    assert cached is not None
    db.execute("UPDATE sentry_organization SET slug = %s WHERE id = %s", (f"x-{unique}", org_id))
    fresh = storage.organization_cache._fetch("id", [org_id])[0]
    assert storage.organization_cache.post_save([fresh])  # no `previous`: read from Redis
    assert not redis_client.exists(slug_key(settings, old))
    assert redis_client.get(slug_key(settings, f"x-{unique}")) == str(org_id).encode()


def test_deleting_evicts_and_hides_the_row_but_with_deleted_sees_it(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    org_id, project_id = make_project(db, unique)
    live = storage.project_cache.get_from_cache(id=project_id)
    assert live is not None and live.date_deleted is None
    assert redis_client.exists(pk_key(settings, PROJECT, project_id))

    changed = delete_project(storage, project_id)
    assert changed is not None and changed.evicted
    assert changed.row.date_deleted is not None
    assert not redis_client.exists(pk_key(settings, PROJECT, project_id))

    # Not cached: read from PostgreSQL, cached with its date_deleted, hidden.
    with statements.measure() as sent:
        assert storage.project_cache.get_from_cache(id=project_id) is None
    assert len(sent) == 1
    assert orjson.loads(redis_client.get(pk_key(settings, PROJECT, project_id)) or b"")[
        "date_deleted"
    ]
    # Cached: still hidden, no SQL.
    with statements.measure() as sent:
        assert storage.project_cache.get_from_cache(id=project_id) is None
        assert storage.project_cache.get_many_from_cache([project_id]) == {}
        deleted = storage.project_cache.get_from_cache(id=project_id, with_deleted=True)
        via_facade = storage.projects([project_id])
    assert sent == []
    assert deleted is not None and deleted.date_deleted == changed.row.date_deleted
    assert via_facade == {project_id: deleted}

    # A second delete keeps the first deletion time.
    again = delete_project(storage, project_id)
    assert again is not None and again.row.date_deleted == changed.row.date_deleted
    assert delete_project(storage, 987654321) is None

    # Organizations: the pk entry and the slug pointer go.
    slug = f"org-{unique}"
    assert storage.organization_cache.get_from_cache(slug=slug) is not None
    deleted_org = delete_organization(storage, slug)
    assert deleted_org is not None and deleted_org.evicted
    assert not redis_client.exists(slug_key(settings, slug))
    assert not redis_client.exists(pk_key(settings, ORGANIZATION, org_id))
    assert storage.organization_cache.get_from_cache(slug=slug) is None
    assert storage.organization_cache.get_from_cache(id=org_id) is None
    org = storage.organizations([org_id])[org_id]
    assert org.date_deleted == deleted_org.row.date_deleted


def test_a_cached_row_of_an_older_shape_is_not_read(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    @dataclass(frozen=True)
    class ProjectWithFirstEvent(Project):
        first_event: datetime | None = None

    _, project_id = make_project(db, unique)
    first_event = datetime(2024, 7, 1, tzinfo=UTC)
    db.execute(
        "UPDATE sentry_project SET first_event = %s WHERE id = %s", (first_event, project_id)
    )
    storage.projects([project_id])  # cached under the current shape's version

    spec = ModelSpec("Project", "sentry_project", ProjectWithFirstEvent)
    newer = ModelCache(spec, storage.redis, storage.pool, settings.redis.model_cache_ttl)
    assert spec.version != PROJECT.version
    with statements.measure() as sent:
        row = newer.get_from_cache(id=project_id)
    assert len(sent) == 1  # the old entry is invisible under the new version
    assert row is not None and row.first_event == first_event
    assert redis_client.exists(pk_key(settings, spec, project_id))
    assert redis_client.exists(pk_key(settings, PROJECT, project_id))  # untouched, expires alone
    with statements.measure() as sent:
        assert newer.get_from_cache(pk=project_id) == row
    assert sent == []


def test_get_many_costs_one_query_for_every_miss(
    storage: Storage, statements: StatementCounter, db: psycopg.Connection[Any], unique: str
) -> None:
    ids = [make_project(db, f"{unique}{index}")[1] for index in range(30)]
    storage.projects(ids[:10])
    with statements.measure() as sent:
        found = storage.projects([*reversed(ids), 987654321])
    assert len(sent) == 1
    assert set(found) == set(ids)
    assert all(found[pid].id == pid for pid in ids)


def test_created_environments_are_pushed_to_the_model_cache(
    storage: Storage, statements: StatementCounter, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, project_id = make_project(db, unique)
    now = datetime.now(UTC)
    envs = storage.environments([EnvironmentRequest(org_id, project_id, "production", now)])
    env = envs[(org_id, "production")]
    with statements.measure() as sent:
        by_id = storage.environments_by_id([env.id])
    assert sent == []
    assert by_id == {env.id: env}
    assert env.date_added is not None
