"""The string-to-id cache (CONTRACT §5.2) with the semantics of Sentry's metrics-indexer cache
(reference §4): which id a per-organization name (a release version, an environment name) has.

External keys are `"<use_case>:<org_id>:<string>"`, split on the first two colons so the string
may contain colons. Two physical layouts, both at cache version 1:

* legacy: `indexer:<partition>:org:str:<use_case>:<md5(org_id:string)>` holding the plain id;
* namespaced: `indexer:<partition>:<namespace>:org:str:<use_case>:<md5(...)>` holding
  `"<id>:<unix time of the write>"`; a stamp older than three hours reads as a miss (stale).

Reads use the namespaced keys when `read_namespaced` is on, else the legacy ones; writes and
deletes always touch the legacy key and also the namespaced one when `write_namespaced` is on.
Every write gets its own TTL, `ttl` plus a uniform 0-25 % jitter, so a burst of new names does not
expire all at once. Stamps are Unix time (UTC on every host, CONTRACT §9.4), where Sentry uses
naive `utcnow().timestamp()`.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Mapping

from consumer import metrics
from consumer.errors import InvalidCacheEntry
from consumer.storage.redis_cache import RedisCache, Write

CACHE_VERSION = 1
PARTITION_KEY = "pg"
STALE_AFTER_SECONDS = 3 * 60 * 60
MAX_JITTER = 0.25
BULK_RECORD = "br"  # Sentry's namespace for get-or-create ("bulk_record") lookups
RESOLVE = "res"


def external_key(use_case: str, organization_id: int, string: str) -> str:
    return f"{use_case}:{organization_id}:{string}"


def _hashed(key: str) -> tuple[str, str]:
    use_case, org_id, string = key.split(":", 2)
    digest = hashlib.md5(f"{org_id}:{string}".encode(), usedforsecurity=False).hexdigest()
    return use_case, digest


def legacy_key(key: str, partition_key: str = PARTITION_KEY) -> str:
    use_case, digest = _hashed(key)
    return f"indexer:{partition_key}:org:str:{use_case}:{digest}"


def namespaced_key(namespace: str, key: str, partition_key: str = PARTITION_KEY) -> str:
    use_case, digest = _hashed(key)
    return f"indexer:{partition_key}:{namespace}:org:str:{use_case}:{digest}"


def stamped_value(value: int, now: float) -> bytes:
    """A namespaced entry: `"<id>:<unix time of the write>"`."""
    return f"{value}:{int(now)}".encode()


def read_legacy(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidCacheEntry(raw) from None


def read_stamped(raw: bytes, now: float) -> int | None:
    """The id of a namespaced entry, None when its stamp is more than three hours old."""
    try:
        value, stamp = raw.split(b":")
        result, written = int(value), int(stamp)
    except ValueError:
        raise InvalidCacheEntry(raw) from None
    if written < int(now - STALE_AFTER_SECONDS):
        return None
    return result


def jittered_ttl(ttl: int, uniform: float) -> int:
    """`ttl` plus `uniform` (drawn from [0, 1)) times 25 % of it, as whole seconds."""
    return int(ttl + uniform * MAX_JITTER * ttl)


class StringIdCache:
    """Sentry's `StringIndexerCache` over `RedisCache`: `get`/`get_many` return ids (None for a
    miss, a stale stamp, an unreadable value or a Redis failure, each counted on the `indexer`
    cache); `set`/`set_many`/`delete`/`delete_many` are one round trip each and never raise."""

    def __init__(
        self,
        redis: RedisCache,
        *,
        ttl: int,
        read_namespaced: bool = False,
        write_namespaced: bool = False,
        partition_key: str = PARTITION_KEY,
        clock: Callable[[], float] = time.time,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.read_namespaced = read_namespaced
        self.write_namespaced = write_namespaced
        self.partition_key = partition_key
        self.clock = clock
        self.uniform = uniform

    def _legacy(self, key: str) -> str:
        return self.redis.key(CACHE_VERSION, legacy_key(key, self.partition_key))

    def _namespaced(self, namespace: str, key: str) -> str:
        return self.redis.key(CACHE_VERSION, namespaced_key(namespace, key, self.partition_key))

    def get(self, namespace: str, key: str) -> int | None:
        return self.get_many(namespace, [key])[key]

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, int | None]:
        wanted = list(dict.fromkeys(keys))
        result: dict[str, int | None] = dict.fromkeys(wanted)
        if not wanted:
            return result
        if self.read_namespaced:
            physical = [self._namespaced(namespace, key) for key in wanted]
        else:
            physical = [self._legacy(key) for key in wanted]
        raw = self.redis.get_many("indexer", physical)
        if raw is None:
            return result
        now = self.clock()
        hits = misses = stale = invalid = 0
        for key, value in zip(wanted, raw, strict=True):
            if value is None:
                misses += 1
                continue
            try:
                found = read_stamped(value, now) if self.read_namespaced else read_legacy(value)
            except InvalidCacheEntry:
                invalid += 1
                continue
            if found is None:
                stale += 1
            else:
                hits += 1
                result[key] = found
        metrics.count_cache("indexer", "hit", hits)
        metrics.count_cache("indexer", "miss", misses)
        metrics.count_cache("indexer", "stale", stale)
        metrics.count_cache("indexer", "invalid", invalid)
        return result

    def set(self, namespace: str, key: str, value: int) -> bool:
        return self.set_many(namespace, {key: value})

    def set_many(self, namespace: str, values: Mapping[str, int]) -> bool:
        """Write ids; False when Redis failed (counted; the names are simply resolved again)."""
        now = self.clock()
        writes = []
        for key, value in values.items():
            writes.append(
                Write(
                    self._legacy(key), str(value).encode(), jittered_ttl(self.ttl, self.uniform())
                )
            )
            if self.write_namespaced:
                writes.append(
                    Write(
                        self._namespaced(namespace, key),
                        stamped_value(value, now),
                        jittered_ttl(self.ttl, self.uniform()),
                    )
                )
        return self.redis.write("indexer", writes)

    def delete(self, namespace: str, key: str) -> bool:
        return self.delete_many(namespace, [key])

    def delete_many(self, namespace: str, keys: Iterable[str]) -> bool:
        physical = []
        for key in keys:
            physical.append(self._legacy(key))
            if self.write_namespaced:
                physical.append(self._namespaced(namespace, key))
        return self.redis.delete_many("indexer", physical)
