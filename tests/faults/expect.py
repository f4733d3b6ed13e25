"""What the database must hold after a scenario, computed from what was sent (CONTRACT §3-§4).

The fields that decide rows (release, dist, environment) are compared after Relay's store
normalizer, the contract's normalizer, run here on those fields alone with Sentry's arguments:
it trims, drops empty values, drops releases Sentry's `Release.is_valid_version` refuses and
dists with characters outside `a-zA-Z0-9_.-`, so an odd value in a message maps to the value the
stored event must hold. From there the rules are the contract's: a release row per
(organization, valid version), a link per (project, release), a dist row per (release, dist) of
an event with a release, an environment row per (organization, name) with "" for events without
one, and a link per (project, environment).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from sentry_relay.processing import StoreNormalizer

from tests.faults.traffic import Sent
from tests.unit.pipeline.samples import expected_document

# Sentry's `Release.is_valid_version` (reference §2.2), restated from the reference, not
# imported, so the suite does not check the worker against itself.
BAD_RELEASE_CHARS = "\r\n\f\t/\\"
MAX_RELEASE_LENGTH = 250
MAX_DIST_LENGTH = 64
MAX_ENVIRONMENT_LENGTH = 64


def is_valid_version(version: str) -> bool:
    if any(char in version for char in BAD_RELEASE_CHARS):
        return False
    stripped = version.strip()
    return stripped not in ("", ".", "..") and stripped.lower() != "latest"


@dataclass(frozen=True)
class Fields:
    """The row-deciding fields of an event after normalization (None: absent or dropped)."""

    release: str | None
    dist: str | None
    environment: str | None

    @property
    def has_release(self) -> bool:
        return (
            self.release is not None
            and is_valid_version(self.release)
            and len(self.release) <= MAX_RELEASE_LENGTH
        )

    @property
    def has_dist(self) -> bool:
        return self.has_release and self.dist is not None and len(self.dist) <= MAX_DIST_LENGTH

    @property
    def environment_name(self) -> str:
        return self.environment or ""


class FieldOracle:
    """Relay's verdict on (release, dist, environment), cached per distinct raw triple."""

    def __init__(self) -> None:
        # Sentry's arguments written out here, not `consumer.pipeline.normalize.store_normalizer`:
        # like the rules above, the expectation must not follow the worker's own choices.
        self._normalizer = StoreNormalizer(
            project_id=1,
            client_ip=None,
            client=None,
            key_id=None,
            grouping_config=None,
            protocol_version="5",
            is_renormalize=False,
            remove_other=False,
            normalize_user_agent=False,
            sent_at=None,
            max_secs_in_future=60,
            max_secs_in_past=30 * 24 * 3600,
            enable_trimming=True,
            json_dumps=orjson.dumps,
        )
        self._cache: dict[bytes, Fields] = {}

    def fields(self, event: Mapping[str, Any]) -> Fields:
        raw = {key: event[key] for key in ("release", "dist", "environment") if key in event}
        cache_key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
        found = self._cache.get(cache_key)
        if found is None:
            normalized = self._normalizer.normalize_event(
                raw_event=orjson.dumps(
                    {"platform": "other", "timestamp": time.time(), "type": "generic", **raw}
                ),
                json_loads=orjson.loads,
            )
            found = self._cache[cache_key] = Fields(
                normalized.get("release"), normalized.get("dist"), normalized.get("environment")
            )
        return found


@dataclass
class Rows:
    """Rows as tuples of names, so expected and actual compare without ids."""

    releases: set[tuple[int, str]] = field(default_factory=set)  # (organization, version)
    release_projects: set[tuple[int, str]] = field(default_factory=set)  # (project, version)
    distributions: set[tuple[int, str, str]] = field(default_factory=set)  # (org, version, name)
    environments: set[tuple[int, str]] = field(default_factory=set)  # (organization, name)
    environment_projects: set[tuple[int, str]] = field(default_factory=set)  # (project, name)

    def tables(self) -> dict[str, set[Any]]:
        return {
            "sentry_release": self.releases,
            "sentry_release_project": self.release_projects,
            "sentry_distribution": self.distributions,
            "sentry_environment": self.environments,
            "sentry_environmentproject": self.environment_projects,
        }


def expected_rows(
    saved: Iterable[Sent], organization_of: Mapping[int, int], oracle: FieldOracle
) -> Rows:
    rows = Rows()
    for record in saved:
        assert record.project_id is not None
        project = record.project_id
        organization = organization_of[project]
        event = record.message()["event"]
        fields = oracle.fields(event)
        if fields.has_release:
            assert fields.release is not None
            rows.releases.add((organization, fields.release))
            rows.release_projects.add((project, fields.release))
            if fields.has_dist:
                assert fields.dist is not None
                rows.distributions.add((organization, fields.release, fields.dist))
        rows.environments.add((organization, fields.environment_name))
        rows.environment_projects.add((project, fields.environment_name))
    return rows


def trimmed(stored: Any, wanted: Any) -> bool:
    """Whether `stored` is `wanted` cut by Relay's trimming (which ends the cut with "...")."""
    return (
        isinstance(stored, str)
        and isinstance(wanted, str)
        and stored.endswith("...")
        and len(stored) < len(wanted)
        and wanted.startswith(stored[:-3])
    )


def content_mismatches(
    record: Sent, document: Mapping[str, Any], occurrence: Any, oracle: FieldOracle
) -> list[str]:
    """What the stored event and occurrence documents get wrong about a saved message."""
    message = record.message()
    event = message["event"]
    fields = oracle.fields(event)
    problems: list[str] = []

    def differs(name: str, stored: Any, wanted: Any) -> None:
        if name in record.unchecked or stored == wanted or trimmed(stored, wanted):
            return
        problems.append(f"{name}: stored {stored!r:.80}, expected {wanted!r:.80}")

    differs("event_id", document.get("event_id"), record.event_id)
    differs("type", document.get("type"), "generic")
    differs("project", document.get("project"), record.project_id)
    differs("platform", document.get("platform"), event.get("platform"))
    differs("level", document.get("level"), message.get("level") or "info")
    differs("release", document.get("release"), fields.release)
    differs("dist", document.get("dist"), fields.dist)
    differs("environment", document.get("environment"), fields.environment)
    metadata = document.get("metadata")
    differs(
        "metadata.title",
        metadata.get("title") if isinstance(metadata, dict) else None,
        message.get("issue_title"),
    )
    request = event.get("request")
    if isinstance(request, dict) and isinstance(request.get("url"), str):
        stored_request = document.get("request") or {}
        # Relay parses URLs as browsers do (WHATWG): the query string moves to
        # `query_string`, the path is percent-encoded, a backslash is a slash.
        wanted_url = urlsplit(request["url"])._replace(query="", fragment="").geturl()
        wanted_url = wanted_url.replace("\\", "/")
        stored_url = stored_request.get("url")
        differs(
            "request.url",
            unquote(stored_url) if isinstance(stored_url, str) else stored_url,
            unquote(wanted_url),
        )
    user = event.get("user")
    if isinstance(user, dict):
        stored_user = document.get("user") or {}
        for key in ("id", "email", "username", "ip_address"):
            if isinstance(user.get(key), str):
                differs(f"user.{key}", stored_user.get(key), user[key])
    tags = dict(tuple(pair) for pair in document.get("tags") or [] if isinstance(pair, list))
    if fields.has_release:
        differs("tags.sentry:release", tags.get("sentry:release"), fields.release)
    differs("tags.environment", tags.get("environment"), fields.environment)
    if isinstance(event.get("server_name"), str):
        # Relay moves `server_name` into the tags.
        differs("server_name", tags.get("server_name"), event["server_name"])
    if "occurrence" not in record.unchecked and occurrence != expected_document(message):
        problems.append("occurrence document differs from what Sentry writes")
    return problems
