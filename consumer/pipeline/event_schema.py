"""Sentry's event payload schemas: the check its occurrence consumer makes of the event it
builds, before saving it (`issues/occurrence_consumer.py:235-254` at `7698ea90003c`, unchanged at
`4b980c7c015f`).

The event must be valid against `issues/event.schema.json` (Relay's event schema as Sentry keeps
it), or failing that against `LEGACY_EVENT_PAYLOAD_SCHEMA` (`issues/json_schemas.py:10-163`);
invalid against both, the message is refused. No published package ships these two (neither
sentry-kafka-schemas nor sentry-relay), so they are kept as data in `schemas/`:

* `event.schema.json`: Sentry's file byte for byte, git blob
  `fb77a12e6a4c9cbdd29b897dfd1b3b6d76b59cd3` at `7698ea90003c` (a newer copy, `0ec91ff923f2`, has
  the same length);
* `legacy_event.schema.json`: the Python literal of `json_schemas.py` at `7698ea90003c` written
  out as JSON, nothing changed.

`tests/unit/pipeline/test_event_schema.py` pins both hashes.

Sentry validates with `jsonschema.validate`, which ignores `format` and never applies
`default`. The schemas are compiled here with fastjsonschema, told the same: formats off, and
every `default` keyword removed before compiling (fastjsonschema would write the defaults into
the event). The test holds these verdicts to `jsonschema`'s.

Validating a whole event costs from 0.1 ms (a small one) to 45 ms (`native.json`: every debug
image tried against each image type), more than the rest of the save. Both schemas are one
object whose properties are checked independently (no constraint spans two of them), so the
event is valid against a schema when its required properties are there and each property is
valid on its own (for the legacy schema: and it has no other). Each property is checked in the
cheapest exact way:

* a property whose subschema constrains nothing but JSON types (`timestamp`, `received`...):
  its verdict is kept per Python type of the value;
* any other scalar: validated (a microsecond);
* an object or array: its verdict is kept in a bounded cache keyed by the value's JSON, so what
  repeats from event to event (`sdk`, `contexts`, `debug_meta`, `modules`, most `user` and
  `tags`) is validated once.

The legacy schema is only consulted when the event schema refuses the event, as in Sentry.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any, Final

import fastjsonschema
import orjson

SCHEMA_FILES: Final = ("event.schema.json", "legacy_event.schema.json")

# The keywords whose values are schemas, or lists or maps of schemas (draft 7).
_SUBSCHEMA: Final = ("additionalProperties", "additionalItems", "contains", "not", "if")
_SUBSCHEMA_MORE: Final = ("then", "else", "propertyNames", "items")
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf", "items")
_SCHEMA_MAPS: Final = ("properties", "patternProperties", "definitions", "dependencies")

# The cache of object and array verdicts, bounded by the JSON bytes it keeps as keys.
CACHE_BYTES: Final = 32 * 1024 * 1024
_SCALARS: Final = (str, int, float, bool, type(None))
# Keywords that leave a schema's verdict a function of the value's JSON type (formats are off).
_TYPE_ONLY_KEYWORDS: Final = {"type", "anyOf", "$ref", "format", "description", "title"}


def load(name: str) -> dict[str, Any]:
    """One of `SCHEMA_FILES`, as Sentry reads it."""
    raw = resources.files("consumer.pipeline").joinpath("schemas", name).read_bytes()
    schema = orjson.loads(raw)
    assert isinstance(schema, dict)
    return schema


def without_defaults(schema: Any) -> Any:
    """A copy of the schema without its `default` annotations (property names kept)."""
    if not isinstance(schema, dict):
        return schema
    copied: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "default":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            copied[key] = {name: without_defaults(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            copied[key] = [without_defaults(sub) for sub in value]
        elif key in _SUBSCHEMA or key in _SUBSCHEMA_MORE:
            copied[key] = without_defaults(value)
        else:
            copied[key] = value
    return copied


def type_only(schema: Any, definitions: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether the schema's verdict depends on nothing but the value's Python type: only type
    keywords (never "integer", which depends on a float's value), `anyOf` and `$ref` of such."""
    if not isinstance(schema, dict) or not set(schema) - {"default"} <= _TYPE_ONLY_KEYWORDS:
        return False
    types = schema.get("type", [])
    if "integer" in (types if isinstance(types, list) else [types]):
        return False
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.removeprefix("#/definitions/")
        if name in seen or name not in definitions:
            return False
        return type_only(definitions[name], definitions, seen | {name})
    return all(type_only(branch, definitions, seen) for branch in schema.get("anyOf", []))


Validator = Callable[[Any], Any]


_TYPE_KEYWORDS: Final = {"type", "format", "description", "title"}


def _types(schema: dict[str, Any]) -> list[str] | None:
    """The JSON types a schema of type keywords only admits (formats are off), else None."""
    if not set(schema) <= _TYPE_KEYWORDS or "type" not in schema:
        return None
    types = schema["type"]
    return list(types) if isinstance(types, list) else [types]


def merge_type_branches(schema: Any, definitions: dict[str, Any]) -> Any:
    """The same verdicts with fewer branches: an `anyOf` whose branches only name types (a
    `$ref` to such a definition included) becomes one `type` list. fastjsonschema tries `anyOf`
    branches by raising and catching an exception per failed branch, which costs more than the
    rest of the check (a string timestamp tried as a number first, in every breadcrumb)."""
    if isinstance(schema, list):
        return [merge_type_branches(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    merged = {
        key: (
            {name: merge_type_branches(sub, definitions) for name, sub in value.items()}
            if key in _SCHEMA_MAPS and isinstance(value, dict)
            else merge_type_branches(value, definitions)
            if key in _SCHEMA_LISTS or key in _SUBSCHEMA or key in _SUBSCHEMA_MORE
            else value
        )
        for key, value in schema.items()
    }
    branches = merged.get("anyOf")
    if not isinstance(branches, list) or "type" in merged:
        return merged
    union: list[str] = []
    for branch in branches:
        if isinstance(branch, dict) and set(branch) == {"$ref"}:
            target = definitions.get(str(branch["$ref"]).removeprefix("#/definitions/"))
            branch = merge_type_branches(target, definitions) if isinstance(target, dict) else {}
        types = _types(branch) if isinstance(branch, dict) else None
        if types is None:
            return merged
        union.extend(kind for kind in types if kind not in union)
    del merged["anyOf"]
    merged["type"] = union
    return merged


def _compile(schema: dict[str, Any]) -> Validator:
    plain = without_defaults(schema)
    definitions = plain.get("definitions", {})
    simpler = merge_type_branches(plain, definitions)
    return fastjsonschema.compile(simpler, use_formats=False)


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The one object schema of a file (the event schema wraps it in a one-branch `anyOf`);
    ValueError if the file is not of the shape property-wise validation relies on."""
    body = schema["anyOf"][0] if "anyOf" in schema and len(schema["anyOf"]) == 1 else schema
    allowed = {"type", "properties", "required", "additionalProperties"}
    if body.get("type") != "object" or not set(body) <= allowed:
        raise ValueError(f"not a plain object schema: {sorted(body)}")
    if not set(schema) - {"anyOf"} <= {"$schema", "title", "description", "definitions"} | allowed:
        raise ValueError(f"unexpected top-level keywords: {sorted(schema)}")
    return body


class _Schema:
    """One schema, property by property, with the cache of its verdicts on object and array
    values (FIFO, bounded by `cache_bytes`) and per type for type-only properties."""

    def __init__(self, schema: dict[str, Any], cache_bytes: int) -> None:
        body = _object_schema(schema)
        self.definitions: dict[str, Any] = schema.get("definitions", {})
        self.required: tuple[str, ...] = tuple(body.get("required", ()))
        self.closed = body.get("additionalProperties", True) is False
        self.subschemas: dict[str, dict[str, Any]] = body["properties"]
        self.validators: dict[str, Validator] = {}  # compiled on first use
        self.type_only = {
            name: type_only(sub, self.definitions) for name, sub in self.subschemas.items()
        }
        self.by_type: dict[tuple[str, type], bool] = {}
        self.cache: dict[tuple[str, bytes], bool] = {}
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self.hits = 0
        self.misses = 0

    def validate(self, name: str, value: Any) -> bool:
        """Whether `value` may be the event's property `name`, validated."""
        validate = self.validators.get(name)
        if validate is None:
            subschema = self.subschemas.get(name)
            if subschema is None:
                return not self.closed
            validate = _compile({"definitions": self.definitions, **subschema})
            self.validators[name] = validate
        try:
            validate(value)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def valid(self, name: str, value: Any) -> bool:
        """`validate`, answered from the caches where they hold it."""
        if name not in self.subschemas:
            return not self.closed
        if self.type_only[name]:
            type_key = (name, type(value))
            verdict = self.by_type.get(type_key)
            if verdict is None:
                verdict = self.by_type[type_key] = self.validate(name, value)
            return verdict
        if isinstance(value, _SCALARS):
            return self.validate(name, value)
        try:
            key = (name, orjson.dumps(value))
        except orjson.JSONEncodeError:  # nested beyond what orjson writes: not cached
            return self.validate(name, value)
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        verdict = self.validate(name, value)
        size = len(key[1])
        if size <= self.cache_bytes:
            while self.cached_bytes + size > self.cache_bytes:
                oldest = next(iter(self.cache))  # first in, first out
                del self.cache[oldest]
                self.cached_bytes -= len(oldest[1])
            self.cache[key] = verdict
            self.cached_bytes += size
        return verdict

    def error(self, event: dict[str, Any]) -> str | None:
        """None when the event is valid, else the first reason it is not."""
        for name in self.required:
            if name not in event:
                return f"event.{name} is required"
        for name, value in event.items():
            if not self.valid(name, value):
                return f"event.{name} is invalid"
        return None


class EventSchemas:
    """Both schemas, each property's validator compiled on first use, with their caches. One
    thread at a time."""

    def __init__(self, cache_bytes: int = CACHE_BYTES) -> None:
        self.cache_bytes = cache_bytes
        self._schemas: tuple[_Schema, _Schema] | None = None

    def schemas(self) -> tuple[_Schema, _Schema]:
        if self._schemas is None:
            current, legacy = (_Schema(load(name), self.cache_bytes) for name in SCHEMA_FILES)
            self._schemas = (current, legacy)
        return self._schemas

    def error(self, event: dict[str, Any]) -> str | None:
        """None when Sentry accepts the event, else why each schema refuses it."""
        current, legacy = self.schemas()
        current_error = current.error(event)
        if current_error is None:
            return None
        legacy_error = legacy.error(event)
        if legacy_error is None:
            return None
        return f"event schema: {current_error}; legacy event schema: {legacy_error}"
