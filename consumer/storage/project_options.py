"""Project options (`sentry_projectoptions`): every option of a project as `{key: value}`, the
values JSON text (never pickles, CONTRACT §9.6), cached per project in Redis under Sentry's
`sentry_projectoptions:<project_id>` key (cache version 1) and evicted when an option is set.

Unlike Sentry, which memoizes options per thread for the life of a consumer process (reference
Appendix C.10), an option set with `consumer projects set-option` takes effect on the next batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
import psycopg_pool
from psycopg import Connection

from consumer import metrics
from consumer.storage.pool import connection
from consumer.storage.redis_cache import RedisCache, Write

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
MAX_KEY_LENGTH = 64  # sentry_projectoptions.key varchar(64)

_SELECT = (
    "SELECT project_id, key, value FROM sentry_projectoptions WHERE project_id = ANY(%s::bigint[])"
)
_UPSERT = """
INSERT INTO sentry_projectoptions (project_id, key, value) VALUES (%s, %s, %s)
ON CONFLICT (project_id, key) DO UPDATE SET value = EXCLUDED.value
"""
_DELETE = "DELETE FROM sentry_projectoptions WHERE project_id = %s AND key = %s"


def cache_key(project_id: int) -> str:
    return f"sentry_projectoptions:{project_id}"


class ProjectOptions:
    """Options of many projects in one Redis round trip and at most one query."""

    def __init__(self, redis: RedisCache, pool: psycopg_pool.ConnectionPool, ttl: int) -> None:
        self.redis = redis
        self.pool = pool
        self.ttl = ttl

    def key(self, project_id: int) -> str:
        return self.redis.key(CACHE_VERSION, cache_key(project_id))

    def get_many(self, project_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """`{project_id: {key: value}}` for every id asked (an empty dict when it has none)."""
        wanted = list(dict.fromkeys(project_ids))
        result: dict[int, dict[str, Any]] = {}
        if not wanted:
            return result
        raw = self.redis.get_many("project_options", [self.key(pid) for pid in wanted])
        misses: list[int] = []
        evict: list[str] = []
        for pid, entry in zip(wanted, raw or [None] * len(wanted), strict=True):
            if entry is None:
                misses.append(pid)
                continue
            try:
                options = orjson.loads(entry)
            except orjson.JSONDecodeError:
                options = None
            if not isinstance(options, dict):
                evict.append(self.key(pid))
                misses.append(pid)
                continue
            result[pid] = options
        if raw is not None:
            metrics.count_cache("project_options", "hit", len(result))
            metrics.count_cache("project_options", "miss", len(misses) - len(evict))
            metrics.count_cache("project_options", "invalid", len(evict))
        writes = [Write(key) for key in evict]
        if misses:
            loaded: dict[int, dict[str, Any]] = {pid: {} for pid in misses}
            with connection(self.pool) as conn:
                rows = conn.execute(_SELECT, (misses,)).fetchall()
            for owner, key, value in rows:
                assert isinstance(owner, int)
                assert isinstance(key, str)
                assert isinstance(value, str)
                try:
                    loaded[owner][key] = orjson.loads(value)
                except orjson.JSONDecodeError:
                    logger.warning("project %s option %r is not JSON; ignored", owner, key)
            result.update(loaded)
            writes.extend(
                Write(self.key(pid), orjson.dumps(options), self.ttl)
                for pid, options in loaded.items()
            )
        self.redis.write("project_options", writes)
        return result

    def evict(self, project_ids: Iterable[int]) -> bool:
        return self.redis.delete_many("project_options", (self.key(pid) for pid in project_ids))


def set_option(conn: Connection[Any], project_id: int, key: str, value: Any) -> None:
    """Store one option as JSON text (None deletes it). The caller evicts the cache."""
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"option key longer than {MAX_KEY_LENGTH} characters: {key!r}")
    if value is None:
        conn.execute(_DELETE, (project_id, key))
    else:
        conn.execute(_UPSERT, (project_id, key, orjson.dumps(value).decode()))
