"""Organization and project administration (`consumer orgs …`, `consumer projects …`)."""

from __future__ import annotations

from typing import Any

from psycopg import Connection


def create_organization(
    conn: Connection[Any], slug: str, name: str | None = None, org_id: int | None = None
) -> int:
    """Create an organization (or return the id of the live one with that slug)."""
    row = conn.execute(
        """INSERT INTO sentry_organization (id, slug, name, status, flags, date_added)
           VALUES (COALESCE(%(id)s, nextval(pg_get_serial_sequence('sentry_organization', 'id'))),
                   %(slug)s, %(name)s, 0, 1, now())
           ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
           RETURNING id""",
        {"id": org_id, "slug": slug, "name": name or slug},
    ).fetchone()
    assert row is not None
    return int(row[0])


def create_project(
    conn: Connection[Any],
    organization_id: int,
    slug: str,
    name: str | None = None,
    project_id: int | None = None,
) -> int:
    row = conn.execute(
        """INSERT INTO sentry_project (id, organization_id, slug, name, status, flags, date_added)
           VALUES (COALESCE(%(id)s, nextval(pg_get_serial_sequence('sentry_project', 'id'))),
                   %(org)s, %(slug)s, %(name)s, 0, 0, now())
           ON CONFLICT (organization_id, slug) DO UPDATE SET slug = EXCLUDED.slug
           RETURNING id""",
        {"id": project_id, "org": organization_id, "slug": slug, "name": name or slug},
    ).fetchone()
    assert row is not None
    return int(row[0])
