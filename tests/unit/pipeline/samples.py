"""Sentry's sample events wrapped as occurrences, and what Sentry's rules give for them.

Shared by the unit tests (decode + save against the fake storage) and the integration tests
(through the real worker). Every sample that is valid JSON is wrapped with the load generator's
`wrap_event` (fresh ids, timestamps now); an occurrence wrapper (`generic-event-profiling.json`)
contributes its `event`. The two files that are not valid JSON are wrapped as they are, by
splicing their bytes into the message, so the message is not valid JSON either.

`expected_fields` restates the rules of reference §2 independently of the pipeline's modules
(straight from the message), for the fields the issue names: title, culprit, tags, release,
environment, user tag, `_metrics`.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from consumer.loadgen.occurrences import wrap_event

# The keys Sentry's occurrence consumer forwards from the event (reference §7.2).
FORWARDED = {
    "breadcrumbs",
    "contexts",
    "debug_meta",
    "dist",
    "environment",
    "extra",
    "modules",
    "release",
    "request",
    "sdk",
    "server_name",
    "stacktrace",
    "trace_id",
    "transaction",
    "user",
}


# Samples whose event Sentry's occurrence consumer refuses: invalid against both of its event
# schemas (`cocoa.json` sends breadcrumbs as a bare list and `dist` ... both schemas refuse one
# of them; `generic-event.json` sends `dist` as an object). Checked against `jsonschema`, the
# library Sentry validates with, in `test_event_schema.py`.
REFUSED_BY_SENTRY = frozenset({"cocoa.json", "generic-event.json"})


@dataclass(frozen=True)
class Sample:
    name: str
    raw: bytes
    event: dict[str, Any] | None  # None when the file is not valid JSON

    @property
    def accepted(self) -> bool:
        """Valid JSON whose event Sentry's occurrence consumer takes."""
        return self.event is not None and self.name not in REFUSED_BY_SENTRY


def load_samples(samples_dir: Path) -> list[Sample]:
    samples = []
    for path in sorted(samples_dir.glob("*.json")):
        raw = path.read_bytes()
        try:
            event = json.loads(raw)
        except ValueError:
            samples.append(Sample(path.name, raw, None))
            continue
        if isinstance(event.get("event"), dict):
            event = event["event"]
        samples.append(Sample(path.name, raw, event))
    return samples


def wrap(sample: Sample, project_id: int, rng: random.Random) -> tuple[bytes, bytes]:
    """(key, value) of the occurrence message carrying the sample."""
    if sample.event is not None:
        return wrap_event(sample.event, project_id, rng)
    now = datetime.now(UTC)
    head = orjson.dumps(
        {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            "project_id": project_id,
            "event_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            "fingerprint": [sample.name],
            "issue_title": sample.name,
            "subtitle": "a sample that is not valid JSON",
            "type": 1001,
            "detection_time": now.timestamp(),
        }
    )
    return sample.name.encode(), head[:-1] + b',"event":' + sample.raw + b"}"


def _frame_culprit(frame: dict[str, Any], platform: Any) -> str:
    platform = frame.get("platform") or platform
    if platform in ("objc", "cocoa", "native"):
        return frame.get("function") or "?"
    where = frame.get("module") or frame.get("filename")
    if not where:
        return ""
    if platform in ("javascript", "node"):
        return f"{frame.get('function') or '?'}({where})"
    return f"{where} in {frame.get('function') or '?'}"


def expected_culprit(stored: dict[str, Any]) -> str:
    """Sentry's culprit for a stored generic event (which never has an `exception`)."""
    if stored.get("transaction"):
        return str(stored["transaction"])
    culprit = ""
    frames = (stored.get("stacktrace") or {}).get("frames") or []
    fallback = None
    for frame in reversed(frames):
        if not frame:
            continue
        if frame.get("in_app"):
            candidate = _frame_culprit(frame, stored.get("platform"))
            if candidate:
                culprit = candidate
                break
        elif fallback is None:
            fallback = _frame_culprit(frame, stored.get("platform"))
    culprit = culprit or fallback or ""
    if not culprit and stored.get("request"):
        culprit = stored["request"].get("url") or ""
    return _trim(culprit)


def expected_user_tag(stored: dict[str, Any]) -> str | None:
    import ipaddress

    user = stored.get("user") or {}
    ip = user.get("ip_address")
    try:
        ipaddress.ip_address(str(ip))
    except ValueError:
        ip = None
    for prefix, value in (
        ("id", user.get("id")),
        ("username", user.get("username")),
        ("email", user.get("email")),
        ("ip", ip),
    ):
        if value:
            return _trim(f"{prefix}:{value}")
    return None


# Keys of a stored event that Relay or Sentry write, whatever the message carried.
WRITTEN = {
    "event_id", "level", "platform", "received", "tags", "timestamp", "type", "culprit",
    "title", "metadata", "location", "logger", "version", "errors", "_meta", "_metrics",
    "project", "nodestore_insert", "contexts",
}  # fmt: skip


def client_tag(event: dict[str, Any], key: str) -> Any:
    """The value of a tag as the client sent it (a map or a list of pairs), else None."""
    sent = event.get("tags") or {}
    pairs = sent.items() if isinstance(sent, dict) else sent
    for pair in pairs:
        if pair and pair[0] == key:
            return pair[1]
    return None


def _trim(value: str) -> str:
    return value if len(value) <= 200 else value[:197] + "..."


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def check_stored_event(
    message: dict[str, Any], stored: dict[str, Any], *, has_release_row: bool
) -> None:
    """Field-by-field checks of a stored event against what Sentry's rules give for it."""
    event = message["event"]
    tags = {pair[0]: pair[1] for pair in stored["tags"] if pair is not None}
    keys = [pair[0] for pair in stored["tags"] if pair is not None]
    assert len(keys) == len(set(keys)), f"a tag key appears twice: {keys}"

    # §7.2: only the forwarded keys of the event reach the stored event
    for key in set(event) - FORWARDED - WRITTEN - {"project_id"}:
        assert key not in stored, f"{key} should have been dropped"
    assert "project_id" not in stored
    assert stored["event_id"] == message["event_id"]
    assert stored["project"] == message["project_id"]
    assert stored["type"] == "generic"
    assert stored["level"] == message["level"] and tags["level"] == message["level"]

    # §2.6: metadata, title, culprit, location
    assert stored["metadata"] == {"title": message["issue_title"]}
    assert stored["title"] == message["issue_title"]
    assert stored["culprit"] == expected_culprit(stored)
    assert stored["location"] is None

    # §2.2: release and dist tags; §2.0 and §2.7: environment
    release = stored.get("release")
    if isinstance(event.get("release"), str) and event["release"].strip():
        assert release == event["release"].strip()
    if release and has_release_row:
        assert tags["sentry:release"] == release
        assert "release" not in tags
        if stored.get("dist"):
            assert tags["sentry:dist"] == stored["dist"]
    else:  # no release made: a client's own tags stay as they are
        assert tags.get("sentry:release") == client_tag(event, "sentry:release")
        assert tags.get("sentry:dist") == client_tag(event, "sentry:dist")
    environment = stored.get("environment")
    if environment:
        assert tags["environment"] == environment
    else:
        assert "environment" not in tags
    if stored.get("transaction"):
        assert tags["transaction"] == stored["transaction"]

    # §2.3: the user tag (without a user, a client's own `sentry:user` tag stays as it is)
    if stored.get("user"):
        assert tags.get("sentry:user") == expected_user_tag(stored)
    else:
        assert tags.get("sentry:user") == client_tag(event, "sentry:user")
    if stored.get("user"):
        assert "user" not in tags

    # §2.4: the URL plugin, on by default, never overriding
    url = (stored.get("request") or {}).get("url")
    if client_tag(event, "url") is not None:
        assert tags["url"] == client_tag(event, "url")
    elif url and len(url) <= 200:
        assert tags["url"] == url

    # §2.5: context tags, which override
    for alias, context in (stored.get("contexts") or {}).items():
        if not context:
            continue
        kind = context.get("type", alias)
        named = {"browser": "name", "runtime": "name", "os": "name", "device": "family"}
        field = named.get(kind)
        if field and context.get(field) is not None and _render(context[field]).strip():
            suffix = "family" if kind == "device" else "name"
            assert tags[f"{alias}.{suffix}"] == _trim(_render(context[field]).strip())

    # §2.8: _metrics, measured before this key and before nodestore_insert
    assert isinstance(stored["nodestore_insert"], float)
    measured = {k: v for k, v in stored.items() if k != "nodestore_insert"}
    measured["_metrics"] = {
        k: v for k, v in stored["_metrics"].items() if k != "bytes.stored.event"
    }
    assert stored["_metrics"]["bytes.stored.event"] == len(orjson.dumps(measured).decode())


# The group types' default priorities the documents below expect (Sentry's `grouptype.py`).
DEFAULT_PRIORITY = {1001: 25, 1006: 25, 2007: 25, 4001: 75, 6001: 50}


def expected_document(message: dict[str, Any]) -> dict[str, Any]:
    """The occurrence document Sentry's `IssueOccurrence.to_dict` writes for a message built by
    the load generator (hex ids, numeric detection time, no assignee), restated from Sentry's
    code rather than from the pipeline's."""
    priority = message.get("initial_issue_priority")
    return {
        "id": uuid.UUID(message["id"]).hex,
        "project_id": message["project_id"],
        "event_id": uuid.UUID(message.get("event_id") or message["event"]["event_id"]).hex,
        "fingerprint": [
            hashlib.md5(part.encode(), usedforsecurity=False).hexdigest()
            for part in message["fingerprint"]
        ],
        "issue_title": message["issue_title"],
        "subtitle": message["subtitle"],
        "resource_id": message.get("resource_id"),
        "evidence_data": message.get("evidence_data"),
        "evidence_display": [
            {"name": e["name"], "value": e["value"], "important": e["important"]}
            for e in message["evidence_display"]
        ],
        "type": message["type"],
        "detection_time": datetime.fromtimestamp(message["detection_time"], UTC).timestamp(),
        "level": message.get("level") or "info",
        "culprit": message.get("culprit") or "",
        "initial_issue_priority": DEFAULT_PRIORITY[message["type"]]
        if priority is None
        else priority,
        "assignee": None,
    }
