"""Bad input, and odd input that is still good, mixed into realistic traffic (scenario 5).

Each kind spoils a fresh occurrence of a real sentry-sdk event one way and says what the
contract promises for it: a dead letter with one of a few reasons (CONTRACT §2: not JSON, schema
violations, wrong types, unknown projects, oversized messages, events the normalizer rejects),
a skip (status changes, occurrences without an event), or a save (odd but valid input: SQL and
shell metacharacters, releases and dists Sentry refuses, which are saved without their rows,
wrong types inside the event, which Relay's normalizer drops, huge strings, which it trims).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tests.faults.traffic import Occurrences, Sent, good

Occurrence = dict[str, Any]

# Project ids no database of the suite hands out.
UNKNOWN_PROJECT = 9_000_000_000
# The worker's default `kafka.max_message_bytes`.
MAX_MESSAGE_BYTES = 1_048_576

SQL = "'; DROP TABLE sentry_release; -- \" OR 1=1; SELECT pg_sleep(10); /* */ \\x00 %s %(x)s $1"
SHELL = "$(touch /tmp/pwned) `id` | tee /etc/passwd && rm -rf ~ ; echo ${HOME} > /dev/null & \\n"


@dataclass(frozen=True)
class Context:
    live_projects: list[int]
    rng: random.Random


def _dumps(value: Any) -> bytes:
    """JSON as a producer might write it: orjson where it can, else the standard library
    (deeper than orjson's 255 levels, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _dead(kind: str, occurrence: Occurrence, value: bytes | None, *reasons: str) -> Sent:
    return Sent(
        kind=kind,
        outcome="dead_lettered",
        key=b"bad-" + kind.encode(),
        value=value,
        project_id=occurrence.get("project_id")
        if isinstance(occurrence.get("project_id"), int)
        else None,
        event_id=occurrence.get("event_id")
        if isinstance(occurrence.get("event_id"), str)
        else None,
        reasons=frozenset(reasons),
    )


def _spoiled(kind: str, *reasons: str, change: Callable[[Occurrence, Context], None]) -> Kind:
    def build(occurrence: Occurrence, context: Context) -> Sent:
        change(occurrence, context)
        return _dead(kind, occurrence, _dumps(occurrence), *reasons)

    return Kind(kind, build)


def _raw(kind: str, *reasons: str, value: Callable[[Occurrence, Context], bytes | None]) -> Kind:
    def build(occurrence: Occurrence, context: Context) -> Sent:
        return _dead(kind, occurrence, value(occurrence, context), *reasons)

    return Kind(kind, build)


def _odd(kind: str, change: Callable[[Occurrence, Context], frozenset[str]]) -> Kind:
    """Odd input that must still be saved; `change` returns the content checks it spoils."""

    def build(occurrence: Occurrence, context: Context) -> Sent:
        unchecked = change(occurrence, context)
        return good(occurrence, kind, unchecked=unchecked)

    return Kind(kind, build)


@dataclass(frozen=True)
class Kind:
    name: str
    build: Callable[[Occurrence, Context], Sent]


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def _delete(*path: str) -> Callable[[Occurrence, Context], None]:
    def change(occurrence: Occurrence, _context: Context) -> None:
        target = occurrence
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _set(value: Any, *path: str) -> Callable[[Occurrence, Context], None]:
    def change(occurrence: Occurrence, _context: Context) -> None:
        target = occurrence
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)

    return change


def _set_project(value: Any) -> Callable[[Occurrence, Context], None]:
    def change(occurrence: Occurrence, _context: Context) -> None:
        occurrence["project_id"] = value
        occurrence["event"]["project_id"] = value

    return change


def _other_project(occurrence: Occurrence, context: Context) -> None:
    others = [p for p in context.live_projects if p != occurrence["project_id"]]
    occurrence["event"]["project_id"] = others[0]


def _integral_float_project(occurrence: Occurrence, _context: Context) -> None:
    # 5.0 passes the schema's "integer"; the event keeps the int, so the two still compare equal.
    occurrence["project_id"] = float(occurrence["project_id"])


def _other_event_id(occurrence: Occurrence, context: Context) -> None:
    occurrence["event_id"] = f"{context.rng.getrandbits(128):032x}"


def _no_event_ids(occurrence: Occurrence, _context: Context) -> None:
    del occurrence["event_id"]
    del occurrence["event"]["event_id"]


def _truncated(occurrence: Occurrence, context: Context) -> bytes:
    value = orjson.dumps(occurrence)
    return value[: context.rng.randrange(1, len(value))]


def _utf8_in_string(occurrence: Occurrence, _context: Context) -> bytes:
    return orjson.dumps(occurrence).replace(b'"issue_title":"', b'"issue_title":"\xff\xfe\xc3(', 1)


def _literal(token: bytes) -> Callable[[Occurrence, Context], bytes]:
    def value(occurrence: Occurrence, _context: Context) -> bytes:
        occurrence["detection_time"] = 0.5
        return orjson.dumps(occurrence).replace(
            b'"detection_time":0.5', b'"detection_time":' + token
        )

    return value


def _deep_array(occurrence: Occurrence, _context: Context) -> bytes:
    occurrence["evidence_data"] = {"x": 0}
    return orjson.dumps(occurrence).replace(b'{"x":0}', b"[" * 5000 + b"]" * 5000)


def _oversized(occurrence: Occurrence, _context: Context) -> bytes:
    occurrence["event"]["extra"] = {"blob": "x" * (MAX_MESSAGE_BYTES + 100_000)}
    return orjson.dumps(occurrence)


def _status_change(occurrence: Occurrence, _context: Context) -> Sent:
    message = {
        "id": occurrence["id"],
        "project_id": occurrence["project_id"],
        "fingerprint": occurrence["fingerprint"],
        "new_status": 1,
        "new_substatus": None,
        "payload_type": "status_change",
    }
    return Sent(
        "status_change",
        "skipped",
        message["fingerprint"][0].encode(),
        orjson.dumps(message),
        project_id=occurrence["project_id"],
        event_id=occurrence["event_id"],
    )


def _no_event(occurrence: Occurrence, _context: Context) -> Sent:
    del occurrence["event"]
    return Sent(
        "no_event",
        "skipped",
        b"no-event",
        orjson.dumps(occurrence),
        project_id=occurrence["project_id"],
        event_id=occurrence["event_id"],
    )


# ------------------------------------------------------------------------- odd but good


def _metacharacters(text: str) -> Callable[[Occurrence, Context], frozenset[str]]:
    """`text` in every string field of the occurrence and of its event."""

    def change(occurrence: Occurrence, _context: Context) -> frozenset[str]:
        for key in ("issue_title", "subtitle", "culprit", "resource_id"):
            occurrence[key] = f"{key} {text}"
        occurrence["fingerprint"] = [f"fp {text}", text]
        occurrence["evidence_display"] = [{"name": text, "value": text, "important": True}]
        occurrence["evidence_data"] = {text: text, "nested": {"list": [text, text]}}
        event = occurrence["event"]
        event["release"] = f"rel {text}"
        event["environment"] = f"env {text}"
        event["dist"] = f"dist {text}"
        event["server_name"] = f"host {text}"
        event["transaction"] = f"GET /{text}"
        event["logger"] = text
        event["user"] = {"id": text, "email": f"{text}@example.com", "username": text}
        event["request"] = {"url": f"https://shop.example.com/{text}", "method": "POST"}
        event["tags"] = {"feature": text, text: "value"}
        event["extra"] = {text: text}
        event["contexts"] = {"app": {"app_name": text}}
        return frozenset()

    return change


def _invalid_release(
    release: Any, dist: Any = None
) -> Callable[[Occurrence, Context], frozenset[str]]:
    def change(occurrence: Occurrence, _context: Context) -> frozenset[str]:
        occurrence["event"]["release"] = release
        if dist is not None:
            occurrence["event"]["dist"] = dist
        return frozenset()

    return change


def _wrong_event_types(occurrence: Occurrence, _context: Context) -> None:
    """Types Sentry's event schemas refuse (a string `user`, `tags`...): a dead letter."""
    event = occurrence["event"]
    event.update(
        user="not a user",
        request=5,
        tags="not tags",
        server_name=7,
        transaction=8,
        contexts="not contexts",
        extra=[1, 2],
        breadcrumbs="not breadcrumbs",
        sdk=5,
        modules="not modules",
        environment=5,
        dist=6,
        release={"not": "a release"},
    )


def _huge_strings(occurrence: Occurrence, _context: Context) -> frozenset[str]:
    occurrence["issue_title"] = "T" * 100_000
    occurrence["subtitle"] = "S" * 50_000
    event = occurrence["event"]
    event["extra"] = {"big": "x" * 300_000}
    event["tags"] = {"big": "y" * 20_000}
    event["server_name"] = "h" * 5_000
    event["release"] = "r" * 10_000  # over Relay's 200 characters: dropped
    event["environment"] = "e" * 1_000  # over 64: dropped
    return frozenset({"server_name", "metadata.title"})


def _extreme_numbers(occurrence: Occurrence, _context: Context) -> frozenset[str]:
    # (a `detection_time` of 1e308 is no time Sentry parses: a dead letter, `invalid_field`)
    # (an extreme `type` is no registered type, an extreme priority no group's: dead letters)
    event = occurrence["event"]
    event["timestamp"] = 1e20  # clamped by Relay
    event["extra"] = {"big": 2**64 - 1, "small": -(2**63), "tiny": 5e-324}
    return frozenset()


def _unicode(occurrence: Occurrence, _context: Context) -> frozenset[str]:
    text = "🚀 Zürich ‮gnp.exe\u200b 中文 \u0000 \ud7ff"
    occurrence["issue_title"] = text
    event = occurrence["event"]
    event["release"] = "🚀 release ‮"
    event["environment"] = "prod\u200b"
    event["server_name"] = text
    event["user"] = {"id": text, "username": text}
    event["dist"] = "a\u0000"
    return frozenset()


KINDS: list[Kind] = [
    # --------------------------------------------------------------- not JSON
    _raw("truncated_json", "invalid_json", value=_truncated),
    _raw("garbage", "invalid_json", value=lambda o, c: b'{"id": "' + c.rng.randbytes(64)),
    _raw("invalid_utf8", "invalid_json", value=lambda o, c: b"\xff\xfe" + c.rng.randbytes(200)),
    _raw("invalid_utf8_in_string", "invalid_json", value=_utf8_in_string),
    # A tombstone keeps its null value (consumer/reader.py), b"" is not JSON.
    _raw("empty_value", "empty_message", value=lambda o, c: None),
    _raw("empty_bytes", "invalid_json", value=lambda o, c: b""),
    _raw("nan", "invalid_json", value=_literal(b"NaN")),
    _raw("infinity", "invalid_json", value=_literal(b"-Infinity")),
    _raw("number_overflow", "invalid_json", value=_literal(b"1e400")),
    _raw("nesting_beyond_parser", "invalid_json", "too_deeply_nested", value=_deep_array),
    # --------------------------------------------------------------- not an occurrence
    _raw("json_array", "not_an_object", value=lambda o, c: orjson.dumps([o])),
    _raw("json_string", "not_an_object", value=lambda o, c: b'"an occurrence"'),
    _raw("json_null", "not_an_object", value=lambda o, c: b"null"),
    _spoiled("missing_id", "schema_violation", change=_delete("id")),
    _spoiled("missing_project_id", "schema_violation", change=_delete("project_id")),
    _spoiled("missing_fingerprint", "schema_violation", change=_delete("fingerprint")),
    _spoiled("missing_issue_title", "missing_field", change=_delete("issue_title")),
    _spoiled("missing_detection_time", "missing_field", change=_delete("detection_time")),
    _spoiled(
        "missing_event_platform", "invalid_event_payload", change=_delete("event", "platform")
    ),
    _spoiled(
        "missing_event_timestamp", "invalid_event_payload", change=_delete("event", "timestamp")
    ),
    _spoiled(
        "missing_event_received", "invalid_event_payload", change=_delete("event", "received")
    ),
    _spoiled("missing_event_ids", "missing_event_id", change=_no_event_ids),
    # --------------------------------------------------------------- wrong types
    _spoiled("id_not_a_string", "schema_violation", change=_set(123, "id")),
    _spoiled("project_id_string", "schema_violation", change=_set_project("5")),
    _spoiled("project_id_integral_float", "invalid_field", change=_integral_float_project),
    _spoiled("fingerprint_string", "schema_violation", change=_set("fp", "fingerprint")),
    _spoiled("fingerprint_numbers", "schema_violation", change=_set([1, 2], "fingerprint")),
    _spoiled("issue_title_number", "schema_violation", change=_set(5, "issue_title")),
    _spoiled("subtitle_list", "schema_violation", change=_set(["a"], "subtitle")),
    _spoiled("type_string", "schema_violation", change=_set("error", "type")),
    _spoiled("priority_string", "schema_violation", change=_set("high", "initial_issue_priority")),
    _spoiled("payload_type_number", "schema_violation", change=_set(5, "payload_type")),
    _spoiled("event_id_number", "invalid_id", change=_set(5, "event_id")),
    _spoiled("detection_time_string", "invalid_field", change=_set("yesterday", "detection_time")),
    _spoiled("level_number", "invalid_event_payload", change=_set(40, "level")),
    _spoiled("event_string", "invalid_event", change=_set("an event", "event")),
    _spoiled("event_list", "invalid_event", change=_set(["an", "event"], "event")),
    _spoiled("event_platform_number", "invalid_event_payload", change=_set(5, "event", "platform")),
    _spoiled(
        "event_timestamp_object", "invalid_event_payload", change=_set({}, "event", "timestamp")
    ),
    _spoiled("event_received_list", "invalid_event_payload", change=_set([1], "event", "received")),
    _spoiled(
        "event_project_id_string", "project_mismatch", change=_set("5", "event", "project_id")
    ),
    # --------------------------------------------------------------- invalid values
    _spoiled("id_not_a_uuid", "invalid_id", change=_set("not-a-uuid", "id")),
    _spoiled("event_id_not_a_uuid", "invalid_id", change=_set("zz" * 16, "event_id")),
    _spoiled("event_id_mismatch", "event_id_mismatch", change=_other_event_id),
    _spoiled("project_mismatch", "project_mismatch", change=_other_project),
    _spoiled("type_beyond_u64", "unknown_group_type", change=_set(2**70, "type")),
    _spoiled(
        "unknown_payload_type", "unknown_payload_type", change=_set("feedback_v9", "payload_type")
    ),
    _raw("message_too_large", "message_too_large", value=_oversized),
    _spoiled(
        "event_nested_too_deep",
        "normalization_failed",
        change=lambda o, c: o["event"].update(extra={"deep": _nested(300)}),
    ),
    _spoiled(
        "occurrence_nested_too_deep",
        "too_deeply_nested",
        change=lambda o, c: o.update(evidence_data={"deep": _nested(300)}),
    ),
    # --------------------------------------------------------------- unknown projects
    _spoiled(
        "unknown_project",
        "unknown_project",
        change=lambda o, c: _set_project(UNKNOWN_PROJECT + c.rng.randrange(10**6))(o, c),
    ),
    _spoiled("project_id_zero", "unknown_project", change=_set_project(0)),
    _spoiled("project_id_negative", "invalid_field", change=_set_project(-1)),
    _spoiled("project_id_beyond_bigint", "invalid_field", change=_set_project(2**63 + 7)),
    _spoiled("project_id_u64_max", "invalid_field", change=_set_project(2**64 - 1)),
    # --------------------------------------------------------------- valid, not saved
    Kind("status_change", _status_change),
    Kind("no_event", _no_event),
    # --------------------------------------------------------------- odd but good
    _odd("sql_metacharacters", _metacharacters(SQL)),
    _odd("shell_metacharacters", _metacharacters(SHELL)),
    _odd("release_sql", _invalid_release("'; DROP TABLE sentry_release; --", "sql-1")),
    _odd("release_shell", _invalid_release("$(id) `id` | && ; > < * ?", "sh_1")),
    _odd(
        "environment_sql",
        lambda o, c: (
            _set("'; DROP TABLE sentry_environment; --", "event", "environment")(o, c)
            or frozenset()
        ),
    ),
    _odd("release_latest", _invalid_release("latest", "1")),
    _odd("release_dot_dot", _invalid_release("..")),
    _odd("release_with_slash", _invalid_release("backend/1.0", "2")),
    _odd("release_blank", _invalid_release("   ")),
    _odd("release_too_long", _invalid_release("v" * 300)),
    # Sentry's event schemas want a string release: a dead letter.
    _spoiled("release_number", "invalid_event_payload", change=_set(42, "event", "release")),
    _odd("dist_with_space", _invalid_release("backend@9.9.9", "has space")),
    _odd("dist_too_long", _invalid_release("backend@9.9.9", "d" * 100)),
    _odd("dist_sql", _invalid_release("backend@9.9.9", SQL)),
    _spoiled("event_fields_wrong_types", "invalid_event_payload", change=_wrong_event_types),
    _odd("huge_strings", _huge_strings),
    _odd("extreme_numbers", _extreme_numbers),
    _odd("unicode", _unicode),
]


def corpus(occurrences: Occurrences, live_projects: list[int], rng: random.Random) -> list[Sent]:
    """One message of every kind (each from a fresh occurrence)."""
    context = Context(live_projects, rng)
    return [kind.build(occurrences.next(rng.choice(live_projects)), context) for kind in KINDS]
