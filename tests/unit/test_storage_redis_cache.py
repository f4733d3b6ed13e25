"""RedisCache's failure handling, with a client that fails on demand (no network): failures are
counted errors that read as misses, and Redis is left alone for `retry_interval` after one."""

from __future__ import annotations

from typing import Any

import redis

from consumer import metrics
from consumer.storage.redis_cache import RedisCache, Write


class FlakyClient:
    """Stands in for redis.Redis: MGET and pipelines, failing while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.data: dict[str, bytes] = {}

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("Connection refused")

    def mget(self, keys: list[str]) -> list[bytes | None]:
        self._call()
        return [self.data.get(key) for key in keys]

    def pipeline(self, transaction: bool = False) -> FlakyClient:
        self.pending: list[Write] = []
        return self

    def set(self, key: str, value: bytes, ex: int) -> None:
        self.pending.append(Write(key, value, ex))

    def delete(self, key: str) -> None:
        self.pending.append(Write(key))

    def execute(self) -> None:
        self._call()
        for item in self.pending:
            if item.value is None:
                self.data.pop(item.key, None)
            else:
                self.data[item.key] = item.value


def errors() -> float:
    return metrics.total(metrics.CACHE_REQUESTS, cache="model", result="error")


def make(client: FlakyClient, now: list[float]) -> RedisCache:
    stub: Any = client
    return RedisCache(stub, "p:", retry_interval=5.0, clock=lambda: now[0])


def test_failures_are_counted_misses_and_redis_is_rested() -> None:
    client, now = FlakyClient(), [100.0]
    cache = make(client, now)
    assert cache.write("model", [Write("p:1:a", b"1", 60)])
    assert cache.get_many("model", ["p:1:a", "p:1:b"]) == [b"1", None]

    client.down = True
    before = errors()
    assert cache.get_many("model", ["p:1:a", "p:1:b"]) is None
    assert errors() - before == 2
    calls = client.calls
    # Within the interval nothing reaches Redis, every key still counts as an error.
    now[0] += 4.9
    assert cache.write("model", [Write("p:1:a")]) is False
    assert cache.get_many("model", ["p:1:a"]) is None
    assert client.calls == calls
    assert errors() - before == 4

    # After it, Redis is tried again; while it still fails, the interval starts over.
    now[0] += 0.1
    assert cache.get_many("model", ["p:1:a"]) is None
    assert client.calls == calls + 1
    client.down = False
    now[0] += 5.0
    assert cache.get_many("model", ["p:1:a"]) == [b"1"]
    assert cache.get_many("model", ["p:1:a"]) == [b"1"]  # closed again: no waiting
    assert errors() - before == 5


def test_keys_carry_the_prefix_and_version() -> None:
    cache = make(FlakyClient(), [0.0])
    assert cache.key(1, "envproj:c:7:42") == "p:1:envproj:c:7:42"
    assert cache.key("3f2", "modelcache:Project:x") == "p:3f2:modelcache:Project:x"
