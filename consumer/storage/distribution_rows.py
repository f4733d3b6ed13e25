"""Distributions: the set-based get-or-create of `sentry_distribution` rows, one per release and
name (Sentry's `Release.add_dist`, reference §2.2), stamped with the event's time and carrying the
release's organization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection

from consumer.storage.models import DistributionRequest

MAX_NAME_LENGTH = 64  # sentry_distribution.name varchar(64)

_RESOLVE = """
WITH req AS (
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::timestamptz[])
        AS t(organization_id, release_id, name, date_added)
),
inserted AS (
    INSERT INTO sentry_distribution (organization_id, release_id, name, date_added)
    SELECT organization_id, release_id, name, date_added FROM req ORDER BY release_id, name
    ON CONFLICT (release_id, name) DO NOTHING
    RETURNING id, release_id, name
),
existing AS (
    SELECT d.id, d.release_id, d.name
    FROM sentry_distribution d
    JOIN req ON d.release_id = req.release_id AND d.name = req.name
)
SELECT true, * FROM inserted
UNION ALL SELECT false, * FROM existing
"""

_READ_BACK = """
SELECT false, d.id, d.release_id, d.name
FROM sentry_distribution d
JOIN unnest(%s::bigint[], %s::text[]) AS t(release_id, name)
  ON d.release_id = t.release_id AND d.name = t.name
"""


def resolve(
    conn: Connection[Any], requests: Sequence[DistributionRequest]
) -> tuple[dict[tuple[int, str], int], int, int]:
    """Get or create one distribution per distinct (release id, name) of `requests` (the first
    request of a pair gives its date): one statement, plus one read-back when a concurrent
    insert was hidden from it. Returns `{(release_id, name): id}`, the number created and the
    number of statements run."""
    first: dict[tuple[int, str], DistributionRequest] = {}
    for request in requests:
        first.setdefault((request.release_id, request.name), request)
    if not first:
        return {}, 0, 0
    wanted = list(first.values())
    found: dict[tuple[int, str], int] = {}
    created = 0
    rows = conn.execute(
        _RESOLVE,
        (
            [item.organization_id for item in wanted],
            [item.release_id for item in wanted],
            [item.name for item in wanted],
            [item.date_added for item in wanted],
        ),
    ).fetchall()
    statements = 1
    unresolved = [key for key in first if key not in {(r[2], r[3]) for r in rows}]
    if unresolved:
        rows += conn.execute(
            _READ_BACK,
            ([release for release, _ in unresolved], [name for _, name in unresolved]),
        ).fetchall()
        statements += 1
    for was_created, dist_id, release_id, name in rows:
        found[(release_id, name)] = dist_id
        created += bool(was_created)
    return found, created, statements
