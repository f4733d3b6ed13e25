"""Fixtures for tests against the real Kafka, PostgreSQL and Redis started by `make services`.

Isolation: the session gets its own PostgreSQL database (created, migrated, dropped), every test
gets its own topics, consumer group and Redis key prefix, so tests (and parallel runs) never
see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.settings import Settings, load_settings
from consumer.storage.migrate import migrate

pytestmark = pytest.mark.integration

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
SERVER_URL = os.environ.get(
    "TEST_DATABASE_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _check_services() -> None:
    problems = []
    try:
        AdminClient({"bootstrap.servers": KAFKA}).list_topics(timeout=5)
    except Exception as error:
        problems.append(f"Kafka at {KAFKA}: {error}")
    try:
        psycopg.connect(SERVER_URL, connect_timeout=3).close()
    except Exception as error:
        problems.append(f"PostgreSQL at {SERVER_URL}: {error}")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as error:
        problems.append(f"Redis at {REDIS_URL}: {error}")
    if problems:
        pytest.fail(
            "integration services are not running (run `make services`):\n" + "\n".join(problems)
        )


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    _check_services()
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = SERVER_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(database_url: str, unique: str) -> Settings:
    """Settings for one test: its own topic, dead-letter topic, group and Redis prefix."""
    return load_settings(
        environ={
            "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
        },
        overrides={
            "kafka": {
                "topic": f"test-{unique}",
                "dlq_topic": f"test-{unique}-dlq",
                "group_id": f"group-{unique}",
                "session_timeout_ms": 10_000,
            },
            "redis": {"key_prefix": f"test:{unique}:"},
            "worker": {"metrics_port": 0, "batch_time_ms": 100, "join_timeout": 10.0},
        },
        config_file=os.devnull,
    )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": KAFKA})


@pytest.fixture
def create_topic(admin: AdminClient) -> Iterator[Callable[..., str]]:
    """`create_topic(name, partitions, config)`; every topic made is deleted after the test."""
    made: list[str] = []

    def create(name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        for future in futures.values():
            future.result(timeout=30)
        made.append(name)
        return name

    yield create
    if made:
        for future in admin.delete_topics(made).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


@pytest.fixture
def producer() -> Iterator[Producer]:
    client = Producer({"bootstrap.servers": KAFKA, "linger.ms": 5, "acks": "all"})
    yield client
    client.flush(30)
