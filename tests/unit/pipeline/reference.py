"""The save pipeline as it was before its CPU work (commit 6d2bfd9), kept as the reference that
the current code must match byte for byte (`test_stored_bytes.py`).

Only the functions that work changed are here, as they were (their metrics and logging left
out: they store nothing); the rest (culprit, event metrics, nodes, environments, the storage
resolution of releases and environments, the plugin registry's value functions, Relay) is
imported from the pipeline, unchanged. So are the tables those functions read, which that work
did not touch either (tag length, interface scores and fields, context tag formats, the
user-agent header slots): the reference checks the rewritten code against the old, not these
tables, and a change to one of them reaches both sides. The reference is the old code on
purpose, not a second implementation of the rules: when a rule changes on purpose, change both
and say why.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from consumer.errors import BadMessage
from consumer.pipeline.contexts import CONTEXT_TAG_FORMATS
from consumer.pipeline.culprit import get_culprit
from consumer.pipeline.environments import apply_environments, resolve_environments
from consumer.pipeline.event_metrics import apply_event_metrics
from consumer.pipeline.interfaces import (
    FRAME_FIELDS,
    INTERFACE_SCORES,
    MECHANISM_FIELDS,
    REQUEST_FIELDS,
    SDK_FIELDS,
)
from consumer.pipeline.job import Job
from consumer.pipeline.message import DEFAULT_LEVEL, OPTIONAL_EVENT_KEYS, Skip
from consumer.pipeline.nodes import encode_nodes
from consumer.pipeline.plugins import PLUGINS, TagPlugin, _PluginFailed
from consumer.pipeline.releases import ResolvedReleases, dist_too_long, resolve_releases
from consumer.pipeline.storage_api import StorageAPI
from consumer.pipeline.tags import ELLIPSIS, MAX_TAG_VALUE_LENGTH
from consumer.pipeline.user_agent import _HEADER_SLOTS, _NO_INFO, UserAgentContexts
from consumer.pipeline.users import event_user
from consumer.storage.models import Project

# ----------------------------------------------------------------------------- tags.py


def truncatechars(value: str, length: int) -> str:
    if len(value) > length:
        return value[: max(0, length - len(ELLIPSIS))] + ELLIPSIS
    return value


def pop_tag(data: dict[str, Any], key: str) -> None:
    tags = data.get("tags")
    if not tags:
        return
    for pair in tags:
        if pair is not None and pair[0] == key:
            data["tags"] = [kv for kv in tags if kv is None or kv[0] != key]
            return


def set_tag(data: dict[str, Any], key: str, value: Any) -> None:
    tags = data.get("tags")
    if tags:
        for pair in tags:
            if pair is not None and pair[0] == key:
                tags = data["tags"] = [kv for kv in tags if kv is None or kv[0] != key]
                break
    if value is not None:
        if tags is None:
            tags = data["tags"] = []
        if type(value) is str and len(value) > MAX_TAG_VALUE_LENGTH:
            value = truncatechars(value, MAX_TAG_VALUE_LENGTH)
        tags.append([key, value])


def get_tag(data: dict[str, Any], key: str) -> Any:
    tags = data.get("tags")
    if not tags:
        return None
    for pair in tags:
        if pair is not None and pair[0] == key:
            return pair[1]
    return None


# ----------------------------------------------------------------------------- message.py

_OPTIONAL_EVENT_KEYS = frozenset(OPTIONAL_EVENT_KEYS)
_HEX_UUID = re.compile(r"[0-9a-f]{32}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hex_uuid(raw: Any, field_name: str) -> str:
    if not isinstance(raw, str):
        raise BadMessage("invalid_id", f"{field_name} must be a UUID string")
    if _HEX_UUID.fullmatch(raw):
        return raw
    try:
        return uuid.UUID(raw).hex
    except ValueError:
        raise BadMessage("invalid_id", f"{field_name} {raw[:64]!r} is not a UUID") from None


def _require(message: dict[str, Any], name: str, valid: Any, expected: str) -> Any:
    if name not in message:
        raise BadMessage("missing_field", f"{name} is required")
    value = message[name]
    if not valid(value):
        raise BadMessage("invalid_field", f"{name} must be {expected}, not {type(value).__name__}")
    return value


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_event(message: dict[str, Any]) -> tuple[str, str, dict[str, Any], Any] | Skip:
    """(occurrence_id, event_id, event, received), or why the message is skipped."""
    payload_type = message.get("payload_type") or "occurrence"
    if payload_type == "status_change":
        return Skip("status_change")
    if payload_type != "occurrence":
        raise BadMessage("unknown_payload_type", f"payload_type {str(payload_type)[:64]!r}")

    project_id = message["project_id"]
    occurrence_id = _hex_uuid(message["id"], "id")
    issue_title = _require(message, "issue_title", _is_str, "a string")
    _require(message, "subtitle", _is_str, "a string")
    _require(message, "type", _is_int, "an integer")
    _require(message, "detection_time", _is_number, "a number")
    level = message.get("level", DEFAULT_LEVEL)
    if level is not None and not isinstance(level, str):
        raise BadMessage("invalid_field", f"level must be a string, not {type(level).__name__}")
    occurrence_event_id = (
        _hex_uuid(message["event_id"], "event_id") if message.get("event_id") else None
    )

    event = message.get("event")
    if event is None:
        return Skip("no_event")
    if not isinstance(event, dict):
        raise BadMessage("invalid_event", f"event is a JSON {type(event).__name__}")
    if message.get("is_buffered_spans") is True:
        return Skip("buffered_spans")
    event_project_id = event.get("project_id")
    if not _is_int(event_project_id) or event_project_id != project_id:
        raise BadMessage(
            "project_mismatch",
            f"project_id in occurrence ({project_id}) differs from the event's "
            f"({str(event_project_id)[:32]})",
        )
    if event.get("event_id"):
        event_id = _hex_uuid(event["event_id"], "event.event_id")
        if occurrence_event_id is not None and occurrence_event_id != event_id:
            raise BadMessage(
                "event_id_mismatch",
                f"event_id in occurrence ({occurrence_event_id}) differs from the event's "
                f"({event_id})",
            )
    elif occurrence_event_id is not None:
        event_id = occurrence_event_id
    else:
        raise BadMessage("missing_event_id", "neither the occurrence nor its event has event_id")
    if not isinstance(event.get("platform"), str):
        raise BadMessage("invalid_event", "event.platform must be a string")
    if not (_is_number(event.get("timestamp")) or isinstance(event.get("timestamp"), str)):
        raise BadMessage("invalid_event", "event.timestamp must be a number or a date string")
    if "received" not in event:
        raise BadMessage("invalid_event", "event.received is required")
    received = event["received"]
    if not (received is None or _is_number(received) or isinstance(received, str)):
        raise BadMessage("invalid_event", "event.received must be a number or a date string")

    data: dict[str, Any] = {
        "event_id": event_id,
        "level": level,
        "platform": event["platform"],
        "received": received,
        "tags": event.get("tags"),
        "timestamp": event["timestamp"],
    }
    for key in event.keys() & _OPTIONAL_EVENT_KEYS:
        data[key] = event[key]
    data["metadata"] = {"title": issue_title}
    data["type"] = "generic"
    return (occurrence_id, event_id, data, received)


# ----------------------------------------------------------------------------- user_agent.py


def user_agent_info(event: dict[str, Any]) -> tuple[str | None, ...] | None:
    request = event.get("request")
    if not isinstance(request, dict):
        return None
    headers = request.get("headers")
    if not isinstance(headers, list):
        return None
    info: list[str | None] | None = None
    for pair in headers:
        if not isinstance(pair, list) or len(pair) != 2:
            continue
        name = pair[0]
        if not isinstance(name, str):
            continue
        slot = _HEADER_SLOTS.get(name.lower())
        if slot is None:
            continue
        if info is None:
            info = [None, None, None, None, None]
        value = pair[1]
        info[slot] = value if isinstance(value, str) else None
    if info is None:
        return _NO_INFO
    return (info[0], info[1], info[2], info[3], info[4])


def mergeable(event: dict[str, Any]) -> bool:
    return user_agent_info(event) is None or isinstance(event.get("contexts"), dict)


def apply_user_agent(cache: UserAgentContexts, event: dict[str, Any]) -> bool:
    """`UserAgentContexts.apply`, the cache's own lookups (unchanged) aside."""
    info = user_agent_info(event)
    if info is None:
        return True
    contexts = event.get("contexts")
    if not isinstance(contexts, dict):
        return False
    if info == _NO_INFO:
        return True
    browser, device, os = cache.derived(info)  # type: ignore[arg-type]
    added = False
    for key, derived in (("browser", browser), ("device", device)):
        if derived is None:
            continue
        present = contexts.get(key)
        if isinstance(present, dict) and present.get("type") == key:
            continue
        added = added or key not in contexts
        contexts[key] = dict(derived)
    if os is not None:
        key = "os" if event.get("platform") == "javascript" else "client_os"
        if key not in contexts:
            contexts[key] = dict(os)
            added = True
    if added:
        event["contexts"] = dict(sorted(contexts.items()))
    return True


# ----------------------------------------------------------------------------- toplevel.py


def pull_out(job: Job) -> None:
    if job.pulled:
        return
    job.pulled = True
    data = job.data
    transaction = data.get("transaction")
    if transaction and not isinstance(transaction, str):
        transaction = str(transaction)
    job.transaction = transaction
    job.logger_name = logger_name = data.get("logger")
    job.level = level = data.get("level")
    job.release = data.get("release")
    job.dist = data.get("dist")
    job.environment = environment = data.get("environment")
    job.datetime = datetime.fromtimestamp(float(data["timestamp"]), UTC)

    if data.get("tags") is None:
        data["tags"] = []
    set_tag(data, "level", level)
    if logger_name:
        set_tag(data, "logger", logger_name)
    if environment:
        set_tag(data, "environment", environment)
    if transaction:
        set_tag(data, "transaction", transaction)
    data["project"] = job.project_id


# ----------------------------------------------------------------------------- releases.py


def apply_releases(jobs: Sequence[Job], resolved: ResolvedReleases) -> None:
    for job in jobs:
        release = resolved.releases.get((job.project_id, job.release)) if job.release else None
        if release is None:
            continue
        job.release_id = release.id
        data = job.data
        pop_tag(data, "release")
        set_tag(data, "sentry:release", release.version)
        if not job.dist:
            continue
        if dist_too_long(job.dist):
            data["dist"] = None
            job.dist = None
            continue
        job.dist_id = resolved.dists[(release.id, job.dist)]
        pop_tag(data, "dist")
        set_tag(data, "sentry:dist", job.dist)


# ----------------------------------------------------------------------------- users.py


def user_tag_value(user: Any) -> str | None:
    for prefix, value in (
        ("id", user.user_ident),
        ("username", user.username),
        ("email", user.email),
        ("ip", user.ip_address),
    ):
        if value:
            return f"{prefix}:{value}"
    return None


def apply_event_users(jobs: Sequence[Job]) -> None:
    for job in jobs:
        data = job.data
        user = event_user(job.project_id, data)
        if user is not None:
            pop_tag(data, "user")
            set_tag(data, "sentry:user", user_tag_value(user))
        job.user = user


# ----------------------------------------------------------------------------- interfaces.py


def _fill(target: dict[str, Any], fields: tuple[str, ...]) -> None:
    for name in fields:
        if name not in target:
            target[name] = None


def _request(value: Any) -> bool:
    if type(value) is not dict:
        return False
    if "query_string" not in value:
        value["query_string"] = []
    _fill(value, REQUEST_FIELDS)
    return True


def _sdk(value: Any) -> bool:
    if type(value) is not dict:
        return False
    _fill(value, SDK_FIELDS)
    return True


def _stacktrace(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for frame in value.get("frames") or ():
        if frame:
            if type(frame) is not dict:
                return False
            _fill(frame, FRAME_FIELDS)
    return True


def _has_frames(value: Any) -> bool:
    if type(value) is not dict:
        return False
    frames = value.get("frames")
    return type(frames) is list and any(frame is not None for frame in frames)


def _exception(value: Any) -> bool:
    if type(value) is not dict:
        return False
    values = value.get("values")
    if values is None:
        return False
    if type(values) is not list:
        return False
    kept = False
    for single in values:
        if single is None:
            continue
        kept = True
        if not single:
            continue
        if type(single) is not dict:
            return False
        for key in ("stacktrace", "raw_stacktrace"):
            if _has_frames(single.get(key)) and not _stacktrace(single[key]):
                return False
        mechanism = single.get("mechanism")
        if mechanism:
            if type(mechanism) is not dict:
                return False
            _fill(mechanism, MECHANISM_FIELDS)
    return kept


def _contexts(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for context in value.values():
        if context is not None and type(context) is not dict:
            return False
    return True


_BUILDERS = {
    "request": _request,
    "sdk": _sdk,
    "stacktrace": _stacktrace,
    "exception": _exception,
    "contexts": _contexts,
}


def _score(item: tuple[int, str]) -> int:
    return item[0]


def event_interfaces(data: dict[str, Any]) -> tuple[str, ...]:
    found: list[tuple[int, str]] = []
    for key, value in data.items():
        score = INTERFACE_SCORES.get(key)
        if score is None or value is None:
            continue
        builder = _BUILDERS.get(key)
        if builder is None:
            if type(value) is not dict:
                continue
        elif not builder(value):
            continue
        found.append((score, key))
    found.sort(key=_score, reverse=True)
    return tuple([key for _score, key in found])


# ----------------------------------------------------------------------------- plugins.py


def plugin_tags(
    plugin: TagPlugin, data: dict[str, Any], interfaces: Sequence[str]
) -> list[tuple[str, str]]:
    try:
        values = plugin.values(data, interfaces)
    except _PluginFailed:
        return []
    return [(plugin.tag, value) for value in values if len(value) <= MAX_TAG_VALUE_LENGTH]


def apply_plugin_tags(jobs: Sequence[Job], options: Mapping[int, Mapping[str, Any]]) -> None:
    enabled = {
        project_id: tuple(p for p in PLUGINS if p.is_enabled(options.get(project_id, {})))
        for project_id in {job.project_id for job in jobs}
    }
    for job in jobs:
        data = job.data
        if job.interfaces is None:
            job.interfaces = event_interfaces(data)
        for plugin in enabled[job.project_id]:
            for key, value in plugin_tags(plugin, data, job.interfaces):
                if get_tag(data, key) is None:
                    set_tag(data, key, value)


# ----------------------------------------------------------------------------- contexts.py

Compiled = tuple[tuple[str, ...], tuple[str, ...]]


def _compile(fmt: str) -> Compiled:
    fields: list[str] = []
    texts: list[str] = []
    for literal, field, _spec, _conv in string.Formatter().parse(fmt):
        if field is None:
            raise ValueError(f"unsupported context tag format {fmt!r}")
        if fields:
            texts.append(literal)
        elif literal:
            raise ValueError(f"unsupported context tag format {fmt!r}")
        fields.append(field)
    return tuple(fields), tuple(texts)


_COMPILED: dict[str, tuple[tuple[str, Compiled], ...]] = {
    kind: tuple((suffix, _compile(fmt)) for suffix, fmt in formats.items())
    for kind, formats in CONTEXT_TAG_FORMATS.items()
}


def _render(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return value if type(value) is str else str(value)


def _format(compiled: Compiled, context: dict[str, Any]) -> str | None:
    fields, texts = compiled
    first = context.get(fields[0])
    if first is None:
        return None
    if not texts:
        return _render(first).strip()
    parts = [_render(first)]
    for text, field in zip(texts, fields[1:], strict=True):
        value = context.get(field)
        if value is None:
            return None
        parts.append(text)
        parts.append(_render(value))
    return "".join(parts).strip()


def context_tags(contexts: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for alias, context in contexts.items():
        if context is None:
            continue
        kind = context.get("type", alias)
        mappings = _COMPILED.get(kind) if isinstance(kind, str) else None
        if not mappings:
            continue
        for suffix, compiled in mappings:
            value = _format(compiled, context)
            if value:
                yield (f"{alias}.{suffix}" if suffix else alias, value)


# ----------------------------------------------------------------------------- interface_tags.py


def exception_tags(exception: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    values = exception.get("values") or []
    if not values or not values[-1]:
        return
    mechanism = values[-1].get("mechanism")
    if not mechanism:
        return
    yield ("mechanism", mechanism.get("type"))
    handled = mechanism.get("handled")
    if handled is not None:
        yield ("handled", "yes" if handled else "no")


def interface_tags(data: dict[str, Any], interfaces: Sequence[str]) -> Iterator[tuple[str, Any]]:
    for key in interfaces:
        if key == "contexts":
            yield from context_tags(data["contexts"])
        elif key == "exception":
            yield from exception_tags(data["exception"])


def apply_interface_tags(jobs: Sequence[Job]) -> None:
    for job in jobs:
        data = job.data
        if job.interfaces is None:
            job.interfaces = event_interfaces(data)
        for key, value in interface_tags(data, job.interfaces):
            set_tag(data, key, value)


# ----------------------------------------------------------------------------- metadata.py


def materialize_metadata(data: dict[str, Any], event_metadata: dict[str, Any]) -> dict[str, Any]:
    extra = data.get("metadata", {})
    if extra is not None:
        event_metadata.update(extra)
    title = event_metadata.get("title")
    return {
        "type": "generic",
        "culprit": get_culprit(data),
        "metadata": event_metadata,
        "title": title if title is not None else "<untitled>",
        "location": None,
    }


def apply_metadata(jobs: Sequence[Job]) -> None:
    for job in jobs:
        data = job.data
        event_metadata: dict[str, Any] = {}
        title = data.get("title")
        if title is not None:
            event_metadata["title"] = title
        job.event_metadata = dict(event_metadata)
        data.update(materialize_metadata(data, event_metadata))
        job.culprit = data["culprit"]


# ----------------------------------------------------------------------------- save.py


def prepare(
    jobs: Sequence[Job],
    projects: Mapping[int, Project],
    storage: StorageAPI,
    user_agents: UserAgentContexts,
    *,
    now: datetime,
    inserted: float,
) -> None:
    """`save._prepare` as it was: every step in Sentry's order, up to the encoded rows."""
    for job in jobs:
        apply_user_agent(user_agents, job.data)
    for job in jobs:
        pull_out(job)
    releases = resolve_releases(jobs, projects, storage)
    options = storage.project_options({job.project_id for job in jobs})
    environments = resolve_environments(jobs, projects, storage, now)
    apply_releases(jobs, releases)
    apply_event_users(jobs)
    apply_plugin_tags(jobs, options)
    apply_interface_tags(jobs)
    apply_metadata(jobs)
    apply_environments(jobs, projects, environments)
    apply_event_metrics(jobs)
    encode_nodes(jobs, inserted, storage.nodestore.compression)
