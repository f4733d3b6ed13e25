"""Releases: Sentry's version rules and the set-based get-or-create of `sentry_release`,
`sentry_release_project` and the project's `has_releases` flag (reference §2.2).

Per (project, version) Sentry looks for a release of the organization named `version` or
`<project slug>-<version>` *linked to the project*, preferring the latter; else it inserts one
(with the version's parsed semver columns) and, when another worker won the insert, re-reads it by
organization and version alone; then it links the release to the project and sets the project's
`has_releases` flag. Here that is one statement for every pair of a batch, plus one read-back only
when a concurrent worker inserted some of the same versions while the statement ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from sentry_relay.exceptions import RelayError
from sentry_relay.processing import parse_release

from consumer.storage.models import Release

# Sentry's BAD_RELEASE_CHARS: a version containing any of these is not a release.
BAD_RELEASE_CHARS = "\r\n\f\x0c\t/\\"
MAX_VERSION_LENGTH = 250  # sentry_release.version varchar(250)
_BIGINT_BITS = 63


def is_valid_version(version: str | None) -> bool:
    """Sentry's `Release.is_valid_version`: not None, none of the bad characters, and after
    stripping not empty, ".", ".." or (any case) "latest"."""
    if version is None:
        return False
    if any(char in version for char in BAD_RELEASE_CHARS):
        return False
    stripped = version.strip()
    return stripped not in ("", ".", "..") and stripped.lower() != "latest"


def project_version(slug: str | None, version: str) -> str:
    """The legacy per-project name Sentry also accepts: `<slug>-<version>`, cut to 250."""
    if slug is None:
        return version
    return f"{slug}-{version}"[:MAX_VERSION_LENGTH]


def fits_bigint(value: object) -> bool:
    """Sentry's `validate_bigint`: a non-negative int that fits a signed 64-bit column."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 0
        and value.bit_length() <= _BIGINT_BITS
    )


def build_number(build_code: str | None) -> int | None:
    """`int(build_code)` when it parses (Python's `int`, as Sentry) and fits a bigint."""
    if build_code is None:
        return None
    try:
        number = int(build_code)
    except ValueError:
        return None
    return number if fits_bigint(number) else None


@dataclass(frozen=True, slots=True)
class VersionColumns:
    """The parsed columns Sentry fills when it creates a release (all NULL when unparsed)."""

    package: str | None = None
    major: int | None = None
    minor: int | None = None
    patch: int | None = None
    revision: int | None = None
    prerelease: str | None = None
    build_code: str | None = None
    build_number: int | None = None


UNPARSED = VersionColumns()


def version_columns(version: str) -> VersionColumns:
    """`sentry_relay.parse_release` as Sentry's release pre-save hook uses it: the columns only
    when a version was parsed and major, minor, patch and revision all fit a bigint; a Relay
    parse error (legacy or unparseable names) leaves every column NULL."""
    try:
        info = parse_release(version)
    except RelayError:
        return UNPARSED
    parsed = info.get("version_parsed")
    if parsed is None or not all(
        fits_bigint(parsed.get(part)) for part in ("major", "minor", "patch", "revision")
    ):
        return UNPARSED
    code = parsed.get("build_code")
    return VersionColumns(
        package=info.get("package"),
        major=parsed["major"],
        minor=parsed["minor"],
        patch=parsed["patch"],
        revision=parsed["revision"],
        prerelease=parsed.get("pre") or "",
        build_code=code,
        build_number=build_number(code),
    )


@dataclass(frozen=True, slots=True)
class Wanted:
    """One (project, version) pair to resolve."""

    organization_id: int
    project_id: int
    project_slug: str | None
    version: str
    date_added: datetime


@dataclass(frozen=True, slots=True)
class Resolved:
    """How the releases of a batch were resolved: `linked` pairs found through an existing link
    (index of the Wanted → release), `by_name` releases by (organization, version), and which
    release ids were created now."""

    linked: dict[int, Release]
    by_name: dict[tuple[int, str], Release]
    created: set[int]


_RESOLVE = """
WITH req AS (
    SELECT * FROM unnest(
        %(ordinal)s::int[], %(org)s::bigint[], %(project)s::bigint[], %(version)s::text[],
        %(project_version)s::text[], %(date_added)s::timestamptz[], %(package)s::text[],
        %(major)s::bigint[], %(minor)s::bigint[], %(patch)s::bigint[], %(revision)s::bigint[],
        %(prerelease)s::text[], %(build_code)s::text[], %(build_number)s::bigint[]
    ) AS t(ordinal, organization_id, project_id, version, project_version, date_added, package,
           major, minor, patch, revision, prerelease, build_code, build_number)
),
candidates AS (
    -- Each request's two possible names, so that releases are joined on (organization,
    -- version) equality: `version IN (a, b)` can only be hashed on the organization, and
    -- would compare every request with every release of it.
    SELECT ordinal, organization_id, project_id, project_version, version AS candidate FROM req
    UNION ALL
    SELECT ordinal, organization_id, project_id, project_version, project_version FROM req
    WHERE project_version <> version
),
linked AS (
    SELECT DISTINCT ON (c.ordinal) c.ordinal, r.id, r.organization_id, r.version, r.date_added
    FROM candidates c
    JOIN sentry_release r
      ON r.organization_id = c.organization_id AND r.version = c.candidate
    JOIN sentry_release_project rp ON rp.release_id = r.id AND rp.project_id = c.project_id
    ORDER BY c.ordinal, (r.version = c.project_version) DESC, r.id
),
wanted AS (
    SELECT DISTINCT ON (organization_id, version) * FROM req
    WHERE NOT EXISTS (SELECT 1 FROM linked WHERE linked.ordinal = req.ordinal)
    ORDER BY organization_id, version, ordinal
),
inserted AS (
    INSERT INTO sentry_release (
        organization_id, version, date_added, data, new_groups, commit_count, total_deploys,
        status, package, major, minor, patch, revision, prerelease, build_code, build_number)
    SELECT organization_id, version, date_added, '{}', 0, 0, 0, 0, package, major, minor, patch,
           revision, prerelease, build_code, build_number
    FROM wanted ORDER BY organization_id, version
    ON CONFLICT (organization_id, version) DO NOTHING
    RETURNING id, organization_id, version, date_added
),
existing AS (
    SELECT r.id, r.organization_id, r.version, r.date_added
    FROM sentry_release r
    JOIN wanted w ON r.organization_id = w.organization_id AND r.version = w.version
)
SELECT 'linked', ordinal, id, organization_id, version, date_added FROM linked
UNION ALL SELECT 'created', NULL, id, organization_id, version, date_added FROM inserted
UNION ALL SELECT 'existing', NULL, id, organization_id, version, date_added FROM existing
"""

_READ_BACK = """
SELECT r.id, r.organization_id, r.version, r.date_added
FROM sentry_release r
JOIN unnest(%s::bigint[], %s::text[]) AS t(organization_id, version)
  ON r.organization_id = t.organization_id AND r.version = t.version
"""

_LINK = """
INSERT INTO sentry_release_project (project_id, release_id, new_groups)
SELECT project_id, release_id, 0
FROM unnest(%s::bigint[], %s::bigint[]) AS t(project_id, release_id)
ORDER BY project_id, release_id
ON CONFLICT (project_id, release_id) DO NOTHING
"""


def resolve(conn: Connection[Any], wanted: Sequence[Wanted]) -> tuple[Resolved, int]:
    """Get or create the releases of `wanted` (valid versions only): one statement, plus one
    read-back when a concurrent insert hid some rows from it. Returns the resolution and the
    number of statements run."""
    columns = [version_columns(item.version) for item in wanted]
    params: dict[str, list[Any]] = {
        "ordinal": list(range(len(wanted))),
        "org": [item.organization_id for item in wanted],
        "project": [item.project_id for item in wanted],
        "version": [item.version for item in wanted],
        "project_version": [project_version(item.project_slug, item.version) for item in wanted],
        "date_added": [item.date_added for item in wanted],
    }
    for field in dataclasses.fields(VersionColumns):
        params[field.name] = [getattr(column, field.name) for column in columns]
    linked: dict[int, Release] = {}
    by_name: dict[tuple[int, str], Release] = {}
    created: set[int] = set()
    for kind, ordinal, release_id, org_id, version, date_added in conn.execute(
        _RESOLVE, params
    ).fetchall():
        release = Release(release_id, org_id, version, date_added)
        if kind == "linked":
            linked[ordinal] = release
        else:
            by_name[(org_id, version)] = release
            if kind == "created":
                created.add(release_id)
    statements = 1
    unresolved = {
        (item.organization_id, item.version)
        for index, item in enumerate(wanted)
        if index not in linked and (item.organization_id, item.version) not in by_name
    }
    if unresolved:
        # A concurrent worker committed these after our statement's snapshot: the insert saw
        # the conflict, the snapshot did not see the row. Sentry's IntegrityError re-read.
        orgs, versions = zip(*sorted(unresolved), strict=True)
        for release_id, org_id, version, date_added in conn.execute(
            _READ_BACK, (list(orgs), list(versions))
        ).fetchall():
            by_name[(org_id, version)] = Release(release_id, org_id, version, date_added)
        statements += 1
    return Resolved(linked, by_name, created), statements


def link(conn: Connection[Any], pairs: set[tuple[int, int]]) -> int:
    """Insert the missing (release id, project id) links; returns the number inserted."""
    ordered = sorted(pairs, key=lambda pair: (pair[1], pair[0]))
    cursor = conn.execute(
        _LINK, ([project for _, project in ordered], [release for release, _ in ordered])
    )
    return max(cursor.rowcount, 0)


_FLAG_HAS_RELEASES = """
WITH target AS (
    SELECT id FROM sentry_project
    WHERE id = ANY(%s::bigint[]) AND (flags IS NULL OR flags & 1 = 0)
    ORDER BY id
    FOR UPDATE
)
UPDATE sentry_project p SET flags = COALESCE(p.flags, 0) | 1
FROM target WHERE p.id = target.id
RETURNING {returning}
"""


def flag_has_releases(
    conn: Connection[Any], project_ids: Iterable[int], returning: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Set bit 0 (`has_releases`) of the projects lacking it; returns the `returning` columns of
    the rows changed. Rows are locked in id order, so concurrent workers cannot deadlock."""
    query = _FLAG_HAS_RELEASES.format(returning=", ".join(f"p.{name}" for name in returning))
    return conn.execute(query.encode(), (sorted(set(project_ids)),)).fetchall()
