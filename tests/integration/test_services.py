"""`scripts/services.py` on real processes: a private stack on other ports starts, answers,
survives a kill and a restart, and a service that will not answer is named with its log."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient

from scripts.services import ROOT, ServiceError, Stack
from tests.integration.helpers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A folder only its owner may enter, as `mktemp -d` makes: PostgreSQL, which never runs as
    root, must still start from it."""
    path = Path(tempfile.mkdtemp(prefix="services-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_private_stack_starts_is_killed_and_restarts(private_dir: Path) -> None:
    stack = Stack(
        cache=private_dir,
        kafka_port=free_port(),
        controller_port=free_port(),
        pg_port=free_port(),
        redis_port=free_port(),
        kafka_libs=ROOT / ".cache" / "kafka" / "libs",
        quiet=True,
    )
    try:
        stack.up()
        assert (
            AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
            .list_topics(timeout=10)
            .brokers
        )
        with psycopg.connect(stack.database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(stack.redis_url).ping()

        for name in ("redis", "postgres", "kafka"):
            stack.kill(name)
            assert not stack.ready(name), f"{name} still answers after SIGKILL"
            stack.up([name])
            assert stack.ready(name), f"{name} did not come back"
    finally:
        stack.remove()
    assert not any(stack.ready(name) for name in ("kafka", "postgres", "redis"))
    assert not stack.pg_folder.exists()


def test_a_service_that_does_not_answer_is_named_with_its_log(tmp_path: Path) -> None:
    """Something holds the Redis port but never answers PING: `up` fails saying so."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    stack = Stack(cache=tmp_path, redis_port=listener.getsockname()[1], quiet=True, start_timeout=3)
    try:
        with pytest.raises(ServiceError) as raised:
            stack.up(["redis"])
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    message = str(raised.value)
    assert message.startswith("redis did not answer")
    assert str(tmp_path / "redis" / "redis.log") in message
