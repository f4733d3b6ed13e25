"""Two worker processes resolving the same 1,000 new release versions and environments at once
converge on one row per name, with every link present (CONTRACT §4 "Get-or-create")."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg
import pytest

from consumer.settings import load_settings
from consumer.storage.models import EnvironmentRequest, ReleaseRequest
from consumer.storage.store import Storage
from tests.integration.conftest import REDIS_URL
from tests.integration.helpers import make_project

NOW = datetime(2024, 7, 1, tzinfo=UTC)
NAMES = 1000
CHUNK = 200


def resolve_all(
    database_url: str,
    prefix: str,
    org_id: int,
    projects: Sequence[int],
    reverse: bool,
    barrier: Barrier,
    results: Any,
) -> None:
    """One worker: resolve every version and environment, in batches, for its projects."""
    settings = load_settings(
        environ={"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL},
        overrides={"redis": {"key_prefix": prefix}},
        config_file=os.devnull,
    )
    storage = Storage.open(settings)
    try:
        order = list(range(NAMES))
        if reverse:
            order.reverse()
        storage.projects(projects)
        barrier.wait(timeout=60)
        releases: dict[tuple[int, str], int] = {}
        environments: dict[str, int] = {}
        for start in range(0, NAMES, CHUNK):
            chunk = order[start : start + CHUNK]
            resolved = storage.releases(
                [
                    ReleaseRequest(org_id, project, None, f"race@{i}.0.0", NOW)
                    for i in chunk
                    for project in projects
                ]
            )
            releases.update({key: release.id for key, release in resolved.items()})
            envs = storage.environments(
                [
                    EnvironmentRequest(org_id, project, f"env-{i}", NOW)
                    for i in chunk
                    for project in projects
                ]
            )
            environments.update({name: env.id for (_, name), env in envs.items()})
        results.put((releases, environments))
    finally:
        storage.close()


@pytest.mark.parametrize("shared_cache", [False, True], ids=["own-redis-prefix", "shared-prefix"])
def test_two_processes_converge_on_one_row_per_name(
    shared_cache: bool, database_url: str, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, p1 = make_project(db, unique)
    slug = f"org-{unique}"
    _, p2 = make_project(db, f"{unique}b", org_slug=slug)
    _, p3 = make_project(db, f"{unique}c", org_slug=slug)
    workers = {"a": [p1, p2], "b": [p2, p3]}
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(
            target=resolve_all,
            args=(
                database_url,
                f"test:{unique}:" if shared_cache else f"test:{unique}:{name}:",
                org_id,
                projects,
                name == "b",
                barrier,
                results,
            ),
        )
        for name, projects in workers.items()
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    versions = dict(
        db.execute(
            """SELECT version, count(*) FROM sentry_release WHERE organization_id = %s
               GROUP BY version""",
            (org_id,),
        ).fetchall()
    )
    assert len(versions) == NAMES and set(versions.values()) == {1}
    names = dict(
        db.execute(
            """SELECT name, count(*) FROM sentry_environment WHERE organization_id = %s
               GROUP BY name""",
            (org_id,),
        ).fetchall()
    )
    assert len(names) == NAMES and set(names.values()) == {1}

    release_ids = dict(
        db.execute(
            "SELECT version, id FROM sentry_release WHERE organization_id = %s", (org_id,)
        ).fetchall()
    )
    env_ids = dict(
        db.execute(
            "SELECT name, id FROM sentry_environment WHERE organization_id = %s", (org_id,)
        ).fetchall()
    )
    for releases, environments in outcomes:
        assert len(releases) == 2 * NAMES and len(environments) == NAMES
        assert all(release_ids[version] == rid for (_, version), rid in releases.items())
        assert environments == env_ids

    expected_links = {
        (release_ids[f"race@{i}.0.0"], project) for i in range(NAMES) for project in (p1, p2, p3)
    }
    release_links = set(
        db.execute(
            """SELECT rp.release_id, rp.project_id FROM sentry_release_project rp
               JOIN sentry_release r ON r.id = rp.release_id WHERE r.organization_id = %s""",
            (org_id,),
        ).fetchall()
    )
    assert release_links == expected_links
    expected_env_links = {
        (env_ids[f"env-{i}"], project) for i in range(NAMES) for project in (p1, p2, p3)
    }
    env_links = set(
        db.execute(
            """SELECT ep.environment_id, ep.project_id FROM sentry_environmentproject ep
               JOIN sentry_environment e ON e.id = ep.environment_id
               WHERE e.organization_id = %s""",
            (org_id,),
        ).fetchall()
    )
    assert env_links == expected_env_links
    flags = db.execute(
        "SELECT flags FROM sentry_project WHERE id = ANY(%s)", ([p1, p2, p3],)
    ).fetchall()
    assert [row[0] & 1 for row in flags] == [1, 1, 1]
