"""Organizations and projects for load generation, created on demand (`consumer produce
--orgs M --create-projects N`). Idempotent: the same slugs give back the same ids."""

from __future__ import annotations

from typing import Any

from psycopg import Connection

from consumer.storage.admin import create_organization, create_project


def ensure_projects(
    conn: Connection[Any], *, organizations: int, projects: int, prefix: str = "loadgen"
) -> list[int]:
    """Create (or find) `organizations` organizations and `projects` projects spread over them
    in turn; return the project ids in order. Commits."""
    if organizations < 1 or projects < 1:
        raise ValueError("at least one organization and one project")
    org_ids = [
        create_organization(conn, f"{prefix}-org-{n}", f"Load generator organization {n}")
        for n in range(1, organizations + 1)
    ]
    project_ids = [
        create_project(
            conn, org_ids[(n - 1) % organizations], f"{prefix}-{n}", f"Load generator project {n}"
        )
        for n in range(1, projects + 1)
    ]
    conn.commit()
    return project_ids
