"""Fixtures for the storage tests: a `Storage` on the session's database and the shared Redis
(per-test key prefix), with every SQL statement it sends counted."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import psycopg
import pytest
import redis
from psycopg.abc import Params

from consumer.settings import Settings, with_changes
from consumer.storage.store import Storage


class StatementCounter:
    """Counts the statements sent through the connections it configured (a cursor subclass
    on every pooled connection, so nothing reaches PostgreSQL uncounted)."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        counter = self

        class CountingCursor(psycopg.Cursor[Any]):
            def execute(
                self,
                query: Any,
                params: Params | None = None,
                *,
                prepare: bool | None = None,
                binary: bool | None = None,
            ) -> Self:
                counter.queries.append(query.decode() if isinstance(query, bytes) else str(query))
                return super().execute(query, params, prepare=prepare, binary=binary)

        self.cursor_class = CountingCursor

    def configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.cursor_factory = self.cursor_class

    @property
    def count(self) -> int:
        return len(self.queries)

    @contextlib.contextmanager
    def measure(self) -> Iterator[list[str]]:
        """The statements sent inside the block."""
        start = len(self.queries)
        sent: list[str] = []
        try:
            yield sent
        finally:
            sent.extend(self.queries[start:])


@pytest.fixture
def statements() -> StatementCounter:
    return StatementCounter()


@pytest.fixture
def storage(settings: Settings, statements: StatementCounter) -> Iterator[Storage]:
    store = Storage.open(settings, configure=statements.configure)
    yield store
    store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own on a free port (never the shared one), to stop at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def private_settings(settings: Settings, private_redis: PrivateRedis) -> Settings:
    from consumer.settings import SecretUrl

    return with_changes(settings, "redis", url=SecretUrl(private_redis.url))
