"""Redis as a cache and never as the source of truth (CONTRACT §5).

Every key carries the configured prefix and a version, as Django's cache does for Sentry:
`<prefix><version>:<key>` (with the default prefix `gc:`, `gc:1:envproj:c:7:42`). Every call is
one round trip. A Redis failure never raises: it is counted as an `error` of the cache that made
the call (one per key) and reads as "nothing cached" or "not written", so the caller goes on
against PostgreSQL. Callers write to the cache only after PostgreSQL committed what the entry says.

After a failure Redis is left alone for `retry_interval` seconds: calls meanwhile count their
errors without touching the network, so a Redis that hangs costs one timeout per interval
instead of one per call, and batches go on at PostgreSQL speed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from consumer import metrics
from consumer.metrics import Cache
from consumer.settings import RedisSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Write:
    """One cache write: `value` under `key` for `ttl` seconds, or a delete when `value` is None."""

    key: str
    value: bytes | None = None
    ttl: int = 0


class RedisCache:
    """A prefixed view of one Redis client whose failures become misses.

    Thread-safe (redis-py's connection pool is). Blocks at most `socket_timeout` per attempt;
    a broken pooled connection is retried once at once (a restarted Redis), never with backoff.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.retry_interval = retry_interval
        self.clock = clock
        self._unavailable_until = 0.0
        # Log an outage once when it starts and once when it ends, not once per call.
        self._healthy = True

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisCache:
        client = redis.Redis.from_url(
            settings.url.reveal(),
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.socket_timeout,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, settings.key_prefix, retry_interval=settings.retry_interval)

    def close(self) -> None:
        self.client.close()

    def key(self, version: int | str, key: str) -> str:
        """The physical key: Django's `<KEY_PREFIX>:<version>:<key>` with our prefix."""
        return f"{self.prefix}{version}:{key}"

    def get_many(self, cache: Cache, keys: Sequence[str]) -> list[bytes | None] | None:
        """Values of `keys` in order (None where absent) in one MGET; None when Redis failed."""
        if not keys:
            return []
        if self._skipping(cache, len(keys)):
            return None
        try:
            values = self.client.mget(keys)
        except redis.RedisError as error:
            self._failed(cache, "read", len(keys), error)
            return None
        self._succeeded()
        return [value if isinstance(value, bytes) else None for value in values]

    def write(self, cache: Cache, writes: Iterable[Write]) -> bool:
        """Apply sets (with TTL) and deletes in one pipelined round trip; False when Redis failed.

        Not atomic: a failure may leave some writes applied, which is harmless because every
        entry written is true at the time it is written.
        """
        batch = list(writes)
        if not batch:
            return True
        if self._skipping(cache, len(batch)):
            return False
        try:
            pipe = self.client.pipeline(transaction=False)
            for item in batch:
                if item.value is None:
                    pipe.delete(item.key)
                else:
                    pipe.set(item.key, item.value, ex=max(1, item.ttl))
            pipe.execute()
        except redis.RedisError as error:
            self._failed(cache, "write", len(batch), error)
            return False
        self._succeeded()
        return True

    def delete_many(self, cache: Cache, keys: Iterable[str]) -> bool:
        return self.write(cache, (Write(key) for key in keys))

    def ttl(self, key: str) -> int:
        """Seconds left on a key (-2 absent, -1 no expiry); raises on Redis errors (tests, tools)."""
        return int(self.client.ttl(key))

    def _skipping(self, cache: Cache, amount: int) -> bool:
        """True (and the errors counted) while Redis is left alone after a failure."""
        if self._unavailable_until and self.clock() < self._unavailable_until:
            metrics.count_cache(cache, "error", amount)
            return True
        return False

    def _failed(self, cache: Cache, action: str, amount: int, error: redis.RedisError) -> None:
        metrics.count_cache(cache, "error", amount)
        self._unavailable_until = self.clock() + self.retry_interval
        if self._healthy:
            self._healthy = False
            logger.warning(
                "redis unavailable (%s cache %s): %s; using PostgreSQL", cache, action, error
            )
        else:
            logger.debug("redis %s failed for the %s cache: %s", action, cache, error)

    def _succeeded(self) -> None:
        self._unavailable_until = 0.0
        if not self._healthy:
            self._healthy = True
            logger.warning("redis available again")
