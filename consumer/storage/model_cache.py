"""The model cache (CONTRACT §5.1): Sentry's `BaseManager.get_from_cache` /
`get_many_from_cache` and its post-save / post-delete hooks (reference §3), on Redis, in JSON.

Keys, as Sentry builds them (`make_key` and the manager's cache version):

* logical key `modelcache:<Model>:<md5("<field>=<value>")>` (`pk` spelled `id`);
* version: the first three hex digits of md5 of the model's sorted field names joined by `&`, so
  adding or removing a field retires every entry written under the old shape;
* physical key `<prefix><version>:<logical key>` (Django's `KEY_PREFIX:version:key`).

The primary-key entry holds the row as a JSON object; an entry for another cache field (an
organization's slug) holds only the pk, a pointer. A cached value that does not decode to a row of
the model with the pk asked for (or a pointer whose row no longer has the value looked up) is
counted `invalid`, deleted, and read again from PostgreSQL. Rows missing from PostgreSQL are not
cached (no negative caching); rows read from PostgreSQL are pushed back.

Soft delete (Sentry's paranoia): a row with `date_deleted` set is cached like any other, and the
ordinary lookups drop it, so they never return a deleted row whether it came from Redis or from
PostgreSQL; `with_deleted=True` returns it (the pipeline needs "deleted" apart from "unknown").
Deleting evicts the row's entries (`post_delete`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
import psycopg_pool

from consumer import metrics
from consumer.errors import InvalidCacheEntry
from consumer.storage.pool import connection
from consumer.storage.redis_cache import RedisCache, Write

T = TypeVar("T")


def cache_version(field_names: Iterable[str]) -> str:
    """Sentry's model-cache version: md5 of the sorted field names joined by "&", 3 hex chars."""
    joined = "&".join(sorted(field_names))
    return hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest()[:3]


def lookup_key(model_name: str, field: str, value: object) -> str:
    """Sentry's `make_key(model, "modelcache", {field: value})` for one field."""
    digest = hashlib.md5(f"{field}={value}".encode(), usedforsecurity=False).hexdigest()
    return f"modelcache:{model_name}:{digest}"


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a field annotated `X` or `X | None`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported field type {hint!r}")
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _converter(hint: Any) -> Callable[[Any], Any]:
    """A function that checks (and, for datetimes, parses) one JSON value of a field's type."""
    hint, optional = _base_type(hint)

    def convert(value: Any) -> Any:
        if value is None:
            if optional:
                return None
            raise InvalidCacheEntry("null in a required field")
        if hint is datetime:
            if not isinstance(value, str):
                raise InvalidCacheEntry("datetime is not a string")
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise InvalidCacheEntry("naive datetime")
            return parsed
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidCacheEntry("not an integer")
            return value
        if hint is str:
            if not isinstance(value, str):
                raise InvalidCacheEntry("not a string")
            return value
        if hint is bool:
            if not isinstance(value, bool):
                raise InvalidCacheEntry("not a boolean")
            return value
        raise TypeError(f"unsupported field type {hint!r}")

    return convert


class ModelSpec(Generic[T]):
    """What the cache needs to know of a model: its row type (a dataclass whose fields are the
    table's columns), table, Sentry model name and cache fields (besides the pk, `id`)."""

    def __init__(
        self, name: str, table: str, row_type: type[T], cache_fields: Sequence[str] = ("id",)
    ) -> None:
        if not dataclasses.is_dataclass(row_type):
            raise TypeError(f"{row_type!r} is not a dataclass")
        self.name = name
        self.table = table
        self.row_type = row_type
        self.fields: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(row_type))
        if "id" not in self.fields:
            raise TypeError(f"{name} has no id field")
        self.cache_fields: tuple[str, ...] = tuple(
            dict.fromkeys(("id", *("id" if f == "pk" else f for f in cache_fields)))
        )
        unknown = set(self.cache_fields) - set(self.fields)
        if unknown:
            raise TypeError(f"{name}: cache fields {sorted(unknown)} are not fields")
        self.version = cache_version(self.fields)
        self.soft_deletes = "date_deleted" in self.fields
        hints = typing.get_type_hints(row_type)
        self._converters = {name: _converter(hints[name]) for name in self.fields}
        self._array_types = {
            name: "bigint[]" if _base_type(hints[name])[0] is int else "text[]"
            for name in self.cache_fields
        }
        self.select = f"SELECT {', '.join(self.fields)} FROM {table}"

    def field(self, name: str) -> str:
        """The cache field a lookup names (`pk` is `id`); ValueError for any other field."""
        field = "id" if name == "pk" else name.removesuffix("__exact")
        if field not in self.cache_fields:
            raise ValueError(f"{self.name}: {name!r} is not a cache field {self.cache_fields}")
        return field

    def array_type(self, field: str) -> str:
        return self._array_types[field]

    def encode(self, row: T) -> bytes:
        return orjson.dumps({name: getattr(row, name) for name in self.fields})

    def decode(self, raw: bytes) -> T:
        """The row in a primary-key entry; InvalidCacheEntry when it is anything else."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidCacheEntry("not JSON") from None
        if not isinstance(data, dict) or set(data) != set(self.fields):
            raise InvalidCacheEntry("not a row of this model")
        try:
            values = {name: convert(data[name]) for name, convert in self._converters.items()}
        except (InvalidCacheEntry, ValueError) as error:  # ValueError: a bad datetime string
            raise InvalidCacheEntry(str(error)) from None
        return self.row_type(**values)

    def from_db(self, row: Sequence[Any]) -> T:
        return self.row_type(*row)


class ModelCache(Generic[T]):
    """`get_from_cache` / `get_many_from_cache` / `post_save` / `post_delete` for one model.

    Every call blocks on Redis (a failure counts as `error` and reads as a miss) and, for what
    Redis did not have, on one PostgreSQL query (TransientError when PostgreSQL is unreachable).
    """

    def __init__(
        self, spec: ModelSpec[T], redis: RedisCache, pool: psycopg_pool.ConnectionPool, ttl: int
    ) -> None:
        self.spec = spec
        self.redis = redis
        self.pool = pool
        self.ttl = ttl

    def key(self, field: str, value: object) -> str:
        return self.redis.key(self.spec.version, lookup_key(self.spec.name, field, value))

    def _pk(self, row: T) -> int:
        return int(getattr(row, "id"))  # noqa: B009 - T is any dataclass with an id

    def _visible(self, row: T, with_deleted: bool) -> bool:
        return with_deleted or not self.spec.soft_deletes or getattr(row, "date_deleted") is None  # noqa: B009

    def get_from_cache(self, *, with_deleted: bool = False, **lookup: object) -> T | None:
        """The row with `field=value` (exactly one keyword: `id`/`pk` or a cache field), None
        when there is none (or it is soft-deleted and `with_deleted` is false)."""
        if len(lookup) != 1:
            raise ValueError("get_from_cache takes exactly one field=value")
        ((name, value),) = lookup.items()
        return self.get_many_from_cache([value], key=name, with_deleted=with_deleted).get(value)

    def get_many_from_cache(
        self, values: Iterable[Any], key: str = "id", *, with_deleted: bool = False
    ) -> dict[Any, T]:
        """`{value: row}` for the values found; one Redis round trip for the whole list (two for
        a pointer field), one PostgreSQL query for every miss, found rows pushed back."""
        field = self.spec.field(key)
        wanted = list(dict.fromkeys(values))
        if not wanted:
            return {}
        found = self._get_by_pk(wanted) if field == "id" else self._get_by_pointer(field, wanted)
        return {value: row for value, row in found.items() if self._visible(row, with_deleted)}

    def _get_by_pk(self, wanted: list[Any]) -> dict[Any, T]:
        found: dict[Any, T] = {}
        misses: list[Any] = []
        evict: list[str] = []
        raw = self.redis.get_many("model", [self.key("id", value) for value in wanted])
        if raw is None:
            misses = wanted
        else:
            for value, entry in zip(wanted, raw, strict=True):
                if entry is None:
                    misses.append(value)
                    continue
                try:
                    row = self.spec.decode(entry)
                    if str(self._pk(row)) != str(value):
                        raise InvalidCacheEntry("entry of another row")
                except InvalidCacheEntry:
                    evict.append(self.key("id", value))
                    misses.append(value)
                    continue
                found[value] = row
            metrics.count_cache("model", "hit", len(found))
            metrics.count_cache("model", "miss", len(misses) - len(evict))
            metrics.count_cache("model", "invalid", len(evict))
        if misses:
            rows = self._fetch("id", misses)
            by_pk = {str(self._pk(row)): row for row in rows}
            for value in misses:
                fetched = by_pk.get(str(value))
                if fetched is not None:
                    found[value] = fetched
            self._push(rows, evict=evict)
        elif evict:
            self.redis.delete_many("model", evict)
        return found

    def _get_by_pointer(self, field: str, wanted: list[Any]) -> dict[Any, T]:
        found: dict[Any, T] = {}
        misses: list[Any] = []
        evict: list[str] = []
        pointers: dict[Any, int] = {}
        raw = self.redis.get_many("model", [self.key(field, value) for value in wanted])
        if raw is None:
            misses = wanted
        else:
            for value, entry in zip(wanted, raw, strict=True):
                if entry is None:
                    misses.append(value)
                    continue
                try:
                    pointers[value] = int(entry)
                except ValueError:
                    evict.append(self.key(field, value))
                    misses.append(value)
            metrics.count_cache("model", "hit", len(pointers))
            metrics.count_cache("model", "miss", len(misses) - len(evict))
        if pointers:
            rows = self._get_by_pk(list(set(pointers.values())))
            for value, pk in pointers.items():
                row = rows.get(pk)
                if row is not None and str(getattr(row, field)) == str(value):
                    found[value] = row
                else:
                    # The pointer outlived its row's value (a missed eviction): distrust it.
                    evict.append(self.key(field, value))
                    misses.append(value)
        metrics.count_cache("model", "invalid", len(evict))
        if misses:
            rows_found = self._fetch(field, misses)
            by_value = {str(getattr(row, field)): row for row in rows_found}
            for value in misses:
                fetched = by_value.get(str(value))
                if fetched is not None:
                    found[value] = fetched
            self._push(rows_found, evict=evict)
        elif evict:
            self.redis.delete_many("model", evict)
        return found

    def _fetch(self, field: str, values: list[Any]) -> list[T]:
        """One query for every value (missing rows are simply absent)."""
        if self.spec.array_type(field) == "bigint[]":
            params: list[Any] = []
            for value in values:
                try:
                    params.append(int(value))
                except (TypeError, ValueError):
                    continue
        else:
            params = [str(value) for value in values]
        if not params:
            return []
        query = f"{self.spec.select} WHERE {field} = ANY(%s::{self.spec.array_type(field)})"
        with connection(self.pool) as conn:
            rows = conn.execute(query.encode(), (params,)).fetchall()
        return [self.spec.from_db(row) for row in rows]

    def _entry_writes(self, row: T) -> list[Write]:
        writes = []
        pk = self._pk(row)
        for field in self.spec.cache_fields[1:]:
            value = getattr(row, field)
            if value is not None:
                writes.append(Write(self.key(field, value), str(pk).encode(), self.ttl))
        writes.append(Write(self.key("id", pk), self.spec.encode(row), self.ttl))
        return writes

    def _push(self, rows: Iterable[T], evict: Iterable[str] = ()) -> bool:
        writes = [Write(key) for key in evict]
        for row in rows:
            writes.extend(self._entry_writes(row))
        return self.redis.write("model", writes)

    def post_save(self, rows: Iterable[T], previous: Mapping[int, T] | None = None) -> bool:
        """After rows were saved: write their pointer and pk entries, and delete pointers for
        cache-field values they no longer have. `previous` is `{pk: row as it was}`; without it
        the entries cached now tell the old values (one more round trip, only for models with a
        cache field besides the pk). One write round trip; False when Redis failed (counted)."""
        saved = list(rows)
        if not saved:
            return True
        stale: list[str] = []
        pointer_fields = self.spec.cache_fields[1:]
        if pointer_fields:
            old = dict(previous or {})
            unknown = [self._pk(row) for row in saved if self._pk(row) not in old]
            if unknown:
                cached = self.redis.get_many("model", [self.key("id", pk) for pk in unknown])
                for pk, entry in zip(unknown, cached or [], strict=False):
                    if entry is not None:
                        try:
                            old[pk] = self.spec.decode(entry)
                        except InvalidCacheEntry:
                            continue
            for row in saved:
                before = old.get(self._pk(row))
                if before is None:
                    continue
                for field in pointer_fields:
                    was = getattr(before, field)
                    if was is not None and was != getattr(row, field):
                        stale.append(self.key(field, was))
        return self._push(saved, evict=stale)

    def post_delete(self, rows: Iterable[T]) -> bool:
        """After rows were deleted (or soft-deleted): delete their pk and pointer entries."""
        keys = []
        for row in rows:
            for field in self.spec.cache_fields:
                value = getattr(row, field)
                if value is not None:
                    keys.append(self.key(field, value))
        return self.redis.delete_many("model", keys)

    def uncache(self, pks: Iterable[int]) -> bool:
        """Delete only the pk entries (Sentry's `uncache_object`)."""
        return self.redis.delete_many("model", (self.key("id", pk) for pk in pks))
