"""PostgreSQL unreachable or connections cut: calls raise TransientError (the batch is retried,
nothing is committed) and the next call works on fresh connections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from consumer.errors import TransientError
from consumer.settings import SecretUrl, Settings, with_changes
from consumer.storage.models import EnvironmentRequest, ReleaseRequest
from consumer.storage.pool import APPLICATION_NAME
from consumer.storage.store import Storage
from tests.integration.helpers import make_project
from tests.integration.storage.conftest import free_port

NOW = datetime(2024, 7, 1, tzinfo=UTC)


def test_opening_against_an_unreachable_database_is_transient(settings: Settings) -> None:
    unreachable = with_changes(
        settings,
        "database",
        url=SecretUrl(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"),
        connect_timeout=1.0,
        checkout_timeout=1.0,
    )
    with pytest.raises(TransientError, match="not reachable"):
        Storage.open(unreachable)


def test_cut_connections_are_transient_then_replaced(
    storage: Storage, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, project_id = make_project(db, unique)
    storage.projects([project_id])
    cut = db.execute(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE application_name = %s AND datname = current_database()""",
        (APPLICATION_NAME,),
    ).fetchone()
    assert cut is not None and cut[0] >= 1
    request = [ReleaseRequest(org_id, project_id, None, "cut@1.0", NOW)]
    with pytest.raises(TransientError):
        storage.releases(request)
    # The broken connection went back to the pool and was discarded: the retry works.
    release = storage.releases(request)[(project_id, "cut@1.0")]
    assert release.version == "cut@1.0"
    envs = storage.environments([EnvironmentRequest(org_id, project_id, "cut", NOW)])
    assert envs[(org_id, "cut")].id > 0
