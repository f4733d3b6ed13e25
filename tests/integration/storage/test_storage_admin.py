"""Administration and schema: project options and their cache, the `consumer orgs` and
`consumer projects` commands, and migrations that are safe to run twice and concurrently."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
import redis

from consumer import cli, metrics
from consumer.errors import AdminError
from consumer.settings import Settings
from consumer.storage.admin import (
    create_organization,
    create_project,
    set_project_option,
)
from consumer.storage.migrate import Migration, applied_versions, available, migrate
from consumer.storage.store import Storage
from tests.integration.conftest import REDIS_URL, SERVER_URL
from tests.integration.helpers import make_project
from tests.integration.storage.conftest import StatementCounter


def options_key(settings: Settings, project_id: int) -> str:
    return f"{settings.redis.key_prefix}1:sentry_projectoptions:{project_id}"


def test_project_options_are_cached_and_evicted_when_set(
    storage: Storage,
    statements: StatementCounter,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    settings: Settings,
    unique: str,
) -> None:
    _, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b")
    assert set_project_option(storage, p1, "mail:enabled", True)
    set_project_option(storage, p1, "sentry:origins", ["*.example.com"])
    with statements.measure() as sent:
        options = storage.project_options([p1, p2])
    assert len(sent) == 1
    assert options == {p1: {"mail:enabled": True, "sentry:origins": ["*.example.com"]}, p2: {}}
    assert orjson.loads(redis_client.get(options_key(settings, p1)) or b"") == options[p1]
    assert redis_client.get(options_key(settings, p2)) == b"{}"
    ttl = redis_client.ttl(options_key(settings, p1))
    assert settings.redis.project_options_ttl - 5 <= ttl <= settings.redis.project_options_ttl

    with statements.measure() as sent:
        assert storage.project_options([p2, p1]) == options
    assert sent == []

    set_project_option(storage, p1, "mail:enabled", False)
    assert not redis_client.exists(options_key(settings, p1))
    set_project_option(storage, p1, "sentry:origins", None)
    assert storage.project_options([p1]) == {p1: {"mail:enabled": False}}

    # Stored as JSON text; a value that is not JSON is ignored, an unreadable entry re-read.
    row = db.execute(
        "SELECT value FROM sentry_projectoptions WHERE project_id = %s AND key = 'mail:enabled'",
        (p1,),
    ).fetchone()
    assert row == ("false",)
    db.execute(
        "INSERT INTO sentry_projectoptions (project_id, key, value) VALUES (%s, 'old', %s)",
        (p2, "gAJLAS4="),  # a base64 pickle, as Sentry stores options
    )
    redis_client.set(options_key(settings, p2), b"\x80\x04garbage")
    invalid = metrics.total(metrics.CACHE_REQUESTS, cache="project_options", result="invalid")
    assert storage.project_options([p2]) == {p2: {}}
    assert (
        metrics.total(metrics.CACHE_REQUESTS, cache="project_options", result="invalid")
        == invalid + 1
    )

    with pytest.raises(AdminError, match="no live project"):
        set_project_option(storage, 987654321, "x", 1)


def test_creating_over_a_deleted_row_is_refused(
    storage: Storage, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, project_id = make_project(db, unique)
    assert create_organization(db, f"org-{unique}") == org_id
    assert create_project(db, org_id, f"proj-{unique}") == project_id
    db.execute("UPDATE sentry_project SET date_deleted = now() WHERE id = %s", (project_id,))
    db.execute("UPDATE sentry_organization SET date_deleted = now() WHERE id = %s", (org_id,))
    with pytest.raises(AdminError, match="deleted"):
        create_project(db, org_id, f"proj-{unique}")
    with pytest.raises(AdminError, match="deleted"):
        create_organization(db, f"org-{unique}")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, database_url: str) -> Settings:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("CONSUMER_REDIS_KEY_PREFIX", settings.redis.key_prefix)
    monkeypatch.setenv("CONSUMER_CONFIG", "/dev/null")
    return settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_the_admin_commands(
    cli_env: Settings,
    storage: Storage,
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    unique: str,
) -> None:
    code, out, _ = run(capsys, "orgs", "create", f"cli-{unique}", "--name", "CLI org")
    assert code == 0
    org_id = int(out)
    code, out, _ = run(capsys, "projects", "create", f"cli-{unique}", "backend")
    assert code == 0
    project_id = int(out)
    assert run(capsys, "projects", "create", f"cli-{unique}", "backend")[1] == str(project_id)
    assert run(capsys, "projects", "create", f"nope-{unique}", "x")[0] == 2

    assert run(capsys, "projects", "set-option", str(project_id), "mail:enabled", "true")[0] == 0
    assert storage.project_options([project_id]) == {project_id: {"mail:enabled": True}}
    assert run(capsys, "projects", "set-option", str(project_id), "mail:enabled", "nope")[0] == 2
    assert run(capsys, "projects", "set-option", str(project_id), "mail:enabled", "--unset")[0] == 0
    assert storage.project_options([project_id]) == {project_id: {}}  # the command evicted it

    # An unreleased group type's ingest feature, as an organization option.
    feature = "organizations:uptime-domain-failure-ingest"
    assert run(capsys, "orgs", "set-option", f"cli-{unique}", feature, "true")[0] == 0
    assert storage.organization_options([org_id], [feature, "other"]) == {org_id: {feature: True}}
    assert run(capsys, "orgs", "set-option", f"cli-{unique}", feature, "--unset")[0] == 0
    assert storage.organization_options([org_id], [feature]) == {}
    assert run(capsys, "orgs", "set-option", f"nope-{unique}", feature, "true")[0] == 1

    assert storage.project_cache.get_from_cache(id=project_id) is not None  # now cached
    code, out, _ = run(capsys, "projects", "delete", str(project_id))
    assert code == 0 and out.startswith(f"project {project_id} deleted at")
    assert storage.project_cache.get_from_cache(id=project_id) is None
    assert storage.projects([project_id])[project_id].date_deleted is not None
    assert run(capsys, "projects", "delete", "987654321")[0] == 1

    assert storage.organization_cache.get_from_cache(slug=f"cli-{unique}") is not None
    code, out, _ = run(capsys, "orgs", "delete", f"cli-{unique}")
    assert code == 0 and out.startswith(f"organization {org_id} deleted at")
    assert storage.organization_cache.get_from_cache(slug=f"cli-{unique}") is None
    assert storage.organizations([org_id])[org_id].date_deleted is not None
    assert run(capsys, "orgs", "create", f"cli-{unique}")[0] == 1  # deleted, not re-created


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"test_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    yield SERVER_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def test_migrations_run_once_even_concurrently(fresh_database: str) -> None:
    applied: list[list[Migration]] = []
    failures: list[BaseException] = []

    def run_migrate() -> None:
        try:
            applied.append(migrate(fresh_database))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run_migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    shipped = [m.version for m in available()]
    assert sorted(len(batch) for batch in applied) == [0, 0, len(shipped)]
    assert applied_versions(fresh_database) == shipped
    assert migrate(fresh_database) == []
    with psycopg.connect(fresh_database) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        deleted_columns = conn.execute(
            """SELECT table_name FROM information_schema.columns
               WHERE column_name = 'date_deleted' ORDER BY table_name"""
        ).fetchall()
    assert {
        "sentry_organization",
        "sentry_project",
        "sentry_projectoptions",
        "sentry_release",
        "sentry_release_project",
        "sentry_distribution",
        "sentry_environment",
        "sentry_environmentproject",
        "nodestore_node",
        "consumer_migrations",
        "sentry_groupedmessage",
        "sentry_grouphash",
        "sentry_projectcounter",
        "sentry_groupenvironment",
        "sentry_grouprelease",
        "sentry_releaseprojectenvironment",
        "sentry_activity",
        "sentry_grouphistory",
        "sentry_groupasignee",  # sic: Sentry's GroupAssignee table
        "consumer_countedoccurrence",
    } <= tables
    assert deleted_columns == [("sentry_organization",), ("sentry_project",)]
