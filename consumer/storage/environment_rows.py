"""Environments: the set-based get-or-create of `sentry_environment` rows (one per organization
and name, "" for events without one) and of their `sentry_environmentproject` links
(reference §2.7). Like Sentry, a new environment is stamped with the time it is created, and
names are not validated here (Relay already trimmed them and capped them at 64 characters).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import Connection

from consumer.storage.models import Environment

MAX_NAME_LENGTH = 64  # sentry_environment.name varchar(64)

_RESOLVE = """
WITH req AS (
    SELECT * FROM unnest(%s::bigint[], %s::text[]) AS t(organization_id, name)
),
inserted AS (
    INSERT INTO sentry_environment (organization_id, name, date_added)
    SELECT organization_id, name, now() FROM req ORDER BY organization_id, name
    ON CONFLICT (organization_id, name) DO NOTHING
    RETURNING id, organization_id, name, date_added
),
existing AS (
    SELECT e.id, e.organization_id, e.name, e.date_added
    FROM sentry_environment e
    JOIN req ON e.organization_id = req.organization_id AND e.name = req.name
)
SELECT true, * FROM inserted
UNION ALL SELECT false, * FROM existing
"""

_READ_BACK = """
SELECT false, e.id, e.organization_id, e.name, e.date_added
FROM sentry_environment e
JOIN unnest(%s::bigint[], %s::text[]) AS t(organization_id, name)
  ON e.organization_id = t.organization_id AND e.name = t.name
"""

_LINK = """
INSERT INTO sentry_environmentproject (project_id, environment_id, is_hidden)
SELECT project_id, environment_id, NULL
FROM unnest(%s::bigint[], %s::bigint[]) AS t(project_id, environment_id)
ORDER BY project_id, environment_id
ON CONFLICT (project_id, environment_id) DO NOTHING
"""


def resolve(
    conn: Connection[Any], names: Iterable[tuple[int, str]]
) -> tuple[dict[tuple[int, str], Environment], set[int], int]:
    """Get or create `(organization_id, name)` environments: one statement, plus one read-back
    when a concurrent worker's insert was hidden from it. Returns the environments, the ids
    created now and the number of statements run."""
    wanted = sorted(set(names))
    if not wanted:
        return {}, set(), 0
    found: dict[tuple[int, str], Environment] = {}
    created: set[int] = set()

    def collect(rows: list[tuple[Any, ...]]) -> None:
        for was_created, env_id, org_id, name, date_added in rows:
            found[(org_id, name)] = Environment(env_id, org_id, name, date_added)
            if was_created:
                created.add(env_id)

    orgs = [org for org, _ in wanted]
    collect(conn.execute(_RESOLVE, (orgs, [name for _, name in wanted])).fetchall())
    statements = 1
    unresolved = [key for key in wanted if key not in found]
    if unresolved:
        collect(
            conn.execute(
                _READ_BACK, ([org for org, _ in unresolved], [name for _, name in unresolved])
            ).fetchall()
        )
        statements += 1
    return found, created, statements


def link(conn: Connection[Any], pairs: set[tuple[int, int]]) -> int:
    """Insert the missing (environment id, project id) links; returns the number inserted."""
    ordered = sorted(pairs, key=lambda pair: (pair[1], pair[0]))
    cursor = conn.execute(_LINK, ([project for _, project in ordered], [env for env, _ in ordered]))
    return max(cursor.rowcount, 0)
