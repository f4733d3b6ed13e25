"""The string-to-id cache on the real Redis: Sentry's indexer-cache layouts and flags, stale
stamps, unreadable values, TTL with jitter, deletes; and the facade with the flags on."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis

from consumer import metrics
from consumer.settings import Settings, with_changes
from consumer.storage.models import ReleaseRequest
from consumer.storage.redis_cache import RedisCache
from consumer.storage.store import Storage
from consumer.storage.string_id_cache import BULK_RECORD, StringIdCache, external_key
from tests.integration.helpers import make_project
from tests.integration.storage.conftest import StatementCounter


def indexer_counts() -> dict[str, float]:
    return {
        result: metrics.total(metrics.CACHE_REQUESTS, cache="indexer", result=result)
        for result in ("hit", "miss", "stale", "invalid")
    }


@pytest.fixture
def cache_redis(settings: Settings) -> Iterator[RedisCache]:
    cache = RedisCache.from_settings(settings.redis)
    yield cache
    cache.close()


def physical(settings: Settings, key: str, namespace: str | None = None) -> str:
    use_case, org, string = key.split(":", 2)
    digest = hashlib.md5(f"{org}:{string}".encode()).hexdigest()
    middle = f"{namespace}:" if namespace else ""
    return f"{settings.redis.key_prefix}1:indexer:pg:{middle}org:str:{use_case}:{digest}"


def test_legacy_layout_by_default(
    cache_redis: RedisCache, redis_client: redis.Redis, settings: Settings
) -> None:
    cache = StringIdCache(cache_redis, ttl=7200)
    key = external_key("releases", 5, "web@1.0:beta")
    assert cache.get(BULK_RECORD, key) is None
    assert cache.set_many(BULK_RECORD, {key: 123})
    assert redis_client.get(physical(settings, key)) == b"123"
    assert not redis_client.exists(physical(settings, key, BULK_RECORD))
    before = indexer_counts()
    assert cache.get_many(BULK_RECORD, [key, external_key("releases", 5, "other")]) == {
        key: 123,
        external_key("releases", 5, "other"): None,
    }
    after = indexer_counts()
    assert after["hit"] - before["hit"] == 1 and after["miss"] - before["miss"] == 1


def test_write_flag_double_writes_stamped_values(
    cache_redis: RedisCache, redis_client: redis.Redis, settings: Settings
) -> None:
    writer = StringIdCache(
        cache_redis, ttl=7200, write_namespaced=True, clock=lambda: 1_700_000_000.0
    )
    key = external_key("environments", 9, "production")
    writer.set(BULK_RECORD, key, 77)
    assert redis_client.get(physical(settings, key)) == b"77"
    assert redis_client.get(physical(settings, key, BULK_RECORD)) == b"77:1700000000"
    # Another namespace is another key.
    assert not redis_client.exists(physical(settings, key, "res"))

    assert writer.delete(BULK_RECORD, key)
    assert not redis_client.exists(physical(settings, key))
    assert not redis_client.exists(physical(settings, key, BULK_RECORD))


def test_read_flag_reads_stamps_and_treats_old_ones_as_stale(
    cache_redis: RedisCache, redis_client: redis.Redis, settings: Settings
) -> None:
    now = time.time()
    reader = StringIdCache(cache_redis, ttl=7200, read_namespaced=True, clock=lambda: now)
    fresh, stale, legacy_only, garbage = (
        external_key("releases", 3, name) for name in ("fresh", "stale", "legacy", "garbage")
    )
    redis_client.set(physical(settings, fresh, BULK_RECORD), f"11:{int(now) - 10_000}")
    redis_client.set(physical(settings, stale, BULK_RECORD), f"12:{int(now) - 10_801}")
    redis_client.set(physical(settings, legacy_only), b"13")
    redis_client.set(physical(settings, garbage, BULK_RECORD), b"14")
    before = indexer_counts()
    assert reader.get_many(BULK_RECORD, [fresh, stale, legacy_only, garbage]) == {
        fresh: 11,
        stale: None,
        legacy_only: None,  # the read flag reads only the namespaced layout
        garbage: None,
    }
    after = indexer_counts()
    assert {k: after[k] - before[k] for k in after} == {
        "hit": 1,
        "miss": 1,
        "stale": 1,
        "invalid": 1,
    }


def test_every_write_gets_a_jittered_ttl(
    cache_redis: RedisCache, redis_client: redis.Redis, settings: Settings
) -> None:
    cache = StringIdCache(cache_redis, ttl=7200, write_namespaced=True)
    keys = {external_key("releases", 4, f"v{i}"): i for i in range(200)}
    cache.set_many(BULK_RECORD, keys)
    ttls = [redis_client.ttl(physical(settings, key)) for key in keys]
    ttls += [redis_client.ttl(physical(settings, key, BULK_RECORD)) for key in keys]
    assert all(7200 - 5 <= ttl <= 9000 for ttl in ttls)
    assert max(ttls) - min(ttls) > 900  # spread over the 0-25 % range, not one TTL for all
    assert cache.delete_many(BULK_RECORD, keys)
    assert cache.get_many(BULK_RECORD, keys) == dict.fromkeys(keys)


def test_the_facade_with_both_flags_on(
    settings: Settings,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    unique: str,
) -> None:
    flagged = with_changes(
        settings, "redis", indexer_read_namespaced=True, indexer_write_namespaced=True
    )
    storage = Storage.open(flagged, configure=statements.configure)
    try:
        org_id, project_id = make_project(db, unique)
        storage.projects([project_id])
        now = datetime.now(UTC)
        request = [ReleaseRequest(org_id, project_id, None, "app@3.0", now)]
        release = storage.releases(request)[(project_id, "app@3.0")]
        key = external_key("releases", org_id, "app@3.0")
        stamped = redis_client.get(physical(settings, key, BULK_RECORD))
        assert isinstance(stamped, bytes)
        assert stamped.startswith(f"{release.id}:".encode())
        with statements.measure() as sent:
            assert storage.releases(request)[(project_id, "app@3.0")].id == release.id
        assert sent == []
        # A stale stamp is a miss: the name is resolved again (and re-stamped).
        redis_client.set(physical(settings, key, BULK_RECORD), f"{release.id}:1000")
        with statements.measure() as sent:
            assert storage.releases(request)[(project_id, "app@3.0")].id == release.id
        assert len(sent) == 1
        fresh = redis_client.get(physical(settings, key, BULK_RECORD))
        assert isinstance(fresh, bytes)
        assert int(fresh.split(b":")[1]) > time.time() - 60
    finally:
        storage.close()
