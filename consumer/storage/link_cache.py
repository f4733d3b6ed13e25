"""Link caches (CONTRACT §5.3): which (environment, project) and (release, project) links are
known to exist, so a batch whose links all exist costs no SQL for them.

Keys follow Sentry's `envproj:c:<environment_id>:<project_id>` (reference §2.7), value `1`, at
cache version 1; release-project links use the same shape under `relproj:c:` (Sentry has no such
cache: it relies on its org-wide release cache and may skip the link, CONTRACT §9.2). An entry is
written only after the link row committed, so a hit is always true; a miss or a Redis failure
only means "insert it, ON CONFLICT DO NOTHING".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from consumer import metrics
from consumer.storage.redis_cache import RedisCache, Write

Pair = tuple[int, int]  # (release or environment id, project id)
LinkCacheName = Literal["release_link", "environment_link"]

CACHE_VERSION = 1
KEY_FORMATS: dict[LinkCacheName, str] = {
    "environment_link": "envproj:c:{}:{}",
    "release_link": "relproj:c:{}:{}",
}


class LinkCache:
    def __init__(self, redis: RedisCache, name: LinkCacheName, ttl: int) -> None:
        self.redis = redis
        self.name: LinkCacheName = name
        self.ttl = ttl
        self._format = KEY_FORMATS[name]

    def key(self, pair: Pair) -> str:
        return self.redis.key(CACHE_VERSION, self._format.format(*pair))

    def missing(self, pairs: Iterable[Pair]) -> set[Pair]:
        """The pairs not known to exist (absent, unreadable, or Redis failed): one round trip."""
        wanted = list(dict.fromkeys(pairs))
        values = self.redis.get_many(self.name, [self.key(pair) for pair in wanted])
        if values is None:
            return set(wanted)
        absent = {pair for pair, value in zip(wanted, values, strict=True) if value is None}
        metrics.count_cache(self.name, "hit", len(wanted) - len(absent))
        metrics.count_cache(self.name, "miss", len(absent))
        return absent

    def remember(self, pairs: Iterable[Pair]) -> bool:
        """Record links that exist in PostgreSQL (committed); one round trip, never raises."""
        return self.redis.write(
            self.name, (Write(self.key(pair), b"1", self.ttl) for pair in pairs)
        )

    def forget(self, pairs: Iterable[Pair]) -> bool:
        return self.redis.delete_many(self.name, (self.key(pair) for pair in pairs))
