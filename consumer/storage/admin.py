"""Organization and project administration (`consumer orgs …`, `consumer projects …`).

Deleting is Sentry's paranoid soft delete: `date_deleted` is set (never cleared here) and the
row's model-cache entries are evicted, so lookups stop returning it at once; the worker skips the
events of deleted organizations and projects. Every change is committed before its cache entries
are evicted or refreshed; when Redis is unreachable the eviction is reported (`evicted=False`)
and the stale entries expire within the model cache TTL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from psycopg import Connection

from consumer.errors import AdminError
from consumer.storage import organization_options, project_options
from consumer.storage.models import Organization, Project
from consumer.storage.pool import transaction
from consumer.storage.store import ORGANIZATION, PROJECT, Storage

T = TypeVar("T")


@dataclass(frozen=True)
class Changed(Generic[T]):
    row: T
    evicted: bool  # False: Redis was unreachable, stale entries live until their TTL


def create_organization(
    conn: Connection[Any], slug: str, name: str | None = None, org_id: int | None = None
) -> int:
    """Create an organization (or return the id of the live one with that slug)."""
    row = conn.execute(
        """INSERT INTO sentry_organization (id, slug, name, status, flags, date_added)
           VALUES (COALESCE(%(id)s, nextval(pg_get_serial_sequence('sentry_organization', 'id'))),
                   %(slug)s, %(name)s, 0, 1, now())
           ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
           RETURNING id, date_deleted""",
        {"id": org_id, "slug": slug, "name": name or slug},
    ).fetchone()
    assert row is not None
    if row[1] is not None:
        raise AdminError(f"organization {slug!r} exists and is deleted")
    return int(row[0])


def live_organization_id(conn: Connection[Any], slug: str) -> int:
    """The id of the organization with `slug` that is not deleted."""
    row = conn.execute(
        "SELECT id FROM sentry_organization WHERE slug = %s AND date_deleted IS NULL", (slug,)
    ).fetchone()
    if row is None:
        raise AdminError(f"no organization with slug {slug!r}")
    return int(row[0])


def create_project(
    conn: Connection[Any],
    organization_id: int,
    slug: str,
    name: str | None = None,
    project_id: int | None = None,
) -> int:
    """Create a project (or return the id of the live one with that slug in the organization)."""
    row = conn.execute(
        """INSERT INTO sentry_project (id, organization_id, slug, name, status, flags, date_added)
           VALUES (COALESCE(%(id)s, nextval(pg_get_serial_sequence('sentry_project', 'id'))),
                   %(org)s, %(slug)s, %(name)s, 0, 0, now())
           ON CONFLICT (organization_id, slug) DO UPDATE SET slug = EXCLUDED.slug
           RETURNING id, date_deleted""",
        {"id": project_id, "org": organization_id, "slug": slug, "name": name or slug},
    ).fetchone()
    assert row is not None
    if row[1] is not None:
        raise AdminError(f"project {slug!r} exists and is deleted")
    return int(row[0])


def delete_organization(storage: Storage, slug: str) -> Changed[Organization] | None:
    """Soft-delete the organization with `slug` (None when there is none) and evict its id and
    slug entries. Deleting twice keeps the first deletion time."""
    with transaction(storage.pool) as conn:
        row = conn.execute(
            f"""UPDATE sentry_organization SET date_deleted = COALESCE(date_deleted, now())
                WHERE slug = %s RETURNING {", ".join(ORGANIZATION.fields)}""".encode(),
            (slug,),
        ).fetchone()
    if row is None:
        return None
    organization = ORGANIZATION.from_db(row)
    return Changed(organization, storage.organization_cache.post_delete([organization]))


def delete_project(storage: Storage, project_id: int) -> Changed[Project] | None:
    """Soft-delete a project (None when there is none) and evict its model-cache and options
    entries. Deleting twice keeps the first deletion time."""
    with transaction(storage.pool) as conn:
        row = conn.execute(
            f"""UPDATE sentry_project SET date_deleted = COALESCE(date_deleted, now())
                WHERE id = %s RETURNING {", ".join(PROJECT.fields)}""".encode(),
            (project_id,),
        ).fetchone()
    if row is None:
        return None
    project = PROJECT.from_db(row)
    evicted = storage.project_cache.post_delete([project])
    evicted = storage.options.evict([project.id]) and evicted
    return Changed(project, evicted)


def set_project_option(storage: Storage, project_id: int, key: str, value: Any) -> bool:
    """Set (or with None remove) one option of a live project, as JSON text, then evict the
    project's options entry. Returns whether the eviction reached Redis."""
    with transaction(storage.pool) as conn:
        live = conn.execute(
            "SELECT 1 FROM sentry_project WHERE id = %s AND date_deleted IS NULL", (project_id,)
        ).fetchone()
        if live is None:
            raise AdminError(f"no live project with id {project_id}")
        project_options.set_option(conn, project_id, key, value)
    return storage.options.evict([project_id])


def set_organization_option(storage: Storage, slug: str, key: str, value: Any) -> int:
    """Set (or with None remove) one option of a live organization, as JSON text; returns the
    organization's id. Ingest features of unreleased group types are options named after the
    feature, e.g. `organizations:feedback-ingest` = true (`pipeline/group_types.py`). Read
    uncached by the worker, so it takes effect on the next batch."""
    with transaction(storage.pool) as conn:
        row = conn.execute(
            "SELECT id FROM sentry_organization WHERE slug = %s AND date_deleted IS NULL", (slug,)
        ).fetchone()
        if row is None:
            raise AdminError(f"no live organization with slug {slug!r}")
        organization_id = row[0]
        assert isinstance(organization_id, int)
        try:
            organization_options.set_option(conn, organization_id, key, value)
        except ValueError as error:
            raise AdminError(str(error)) from None
    return organization_id


def rename_organization(storage: Storage, organization_id: int, slug: str) -> Changed[Organization]:
    """Change an organization's slug, then push its new entries and evict the old slug's
    pointer (the model cache's stale-pointer eviction)."""
    columns = ", ".join(ORGANIZATION.fields)
    with transaction(storage.pool) as conn:
        before = conn.execute(
            f"SELECT {columns} FROM sentry_organization WHERE id = %s FOR UPDATE".encode(),
            (organization_id,),
        ).fetchone()
        if before is None:
            raise AdminError(f"no organization with id {organization_id}")
        after = conn.execute(
            f"UPDATE sentry_organization SET slug = %s WHERE id = %s RETURNING {columns}".encode(),
            (slug, organization_id),
        ).fetchone()
    assert after is not None
    organization = ORGANIZATION.from_db(after)
    previous = {organization_id: ORGANIZATION.from_db(before)}
    return Changed(organization, storage.organization_cache.post_save([organization], previous))
