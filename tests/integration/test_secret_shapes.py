"""Secrets in every URL form libpq and redis-py accept never reach the worker's output (issue 17,
seen 4): a password holding an unencoded `#`, `?`, `/`, `@`, `&` or a bad `%` escape, in the
user part, as a query parameter, or in a libpq `key=value` string, run through `consumer run`
against the real services; neither the start line, the logs, an error nor a traceback shows it
or any piece of it a parser may have cut out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from consumer.settings import Settings, secret_fragments
from tests.integration.helpers import free_port, worker_env

pytestmark = pytest.mark.integration

# (URL with {password} and {port}, the password): PostgreSQL at a port nobody listens on.
POSTGRES_SHAPES = [
    ("postgresql://postgres:{password}@127.0.0.1:{port}/app", "Hash#Secret9"),
    ("postgresql://postgres:{password}@127.0.0.1:{port}/app", "Query?Secret9"),
    ("postgresql://postgres:{password}@127.0.0.1:{port}/app", "Slash/Secret9"),
    ("postgresql://postgres:{password}@127.0.0.1:{port}/app", "At@Secret9x"),
    ("postgresql://postgres:{password}@127.0.0.1:{port}/app", "Perc%zzSecret9"),
    ("postgresql://postgres:{password}@127.0.0.1:{port}/app", "Colon:Secret9"),
    ("postgresql://postgres@127.0.0.1:{port}/app?password={password}", "Param#Secret9"),
    (
        "postgresql://postgres@127.0.0.1:{port}/app?password={password}&sslmode=disable",
        "Amp&Secret9",
    ),
    ("postgresql://postgres@127.0.0.1:{port}/app?sslpassword={password}", "Ssl/Secret9"),
]
# Redis shapes: the worker runs (PostgreSQL is the test's), Redis at a port nobody listens on.
REDIS_SHAPES = [
    ("redis://:{password}@127.0.0.1:{port}/0", "Hash#Secret9"),
    ("redis://default:{password}@127.0.0.1:{port}/0", "Slash/At@Secret9"),
    ("redis://127.0.0.1:{port}/0?password={password}", "Query?Secret9"),
    ("rediss://:{password}@127.0.0.1:{port}/0", "Perc%zzSecret9"),
    ("unix://:{password}@/tmp/nowhere-{port}.sock?db=0", "Unix#Secret9"),
]


def _run(settings: Settings, env: dict[str, str]) -> tuple[int, str]:
    command = [sys.executable, "-m", "consumer", "--config", os.devnull, "--log-level", "DEBUG"]
    command += ["run", "--topic", settings.kafka.topic, "--dlq-topic", settings.kafka.dlq_topic]
    command += ["--group", settings.kafka.group_id, "--exit-when-idle", "1", "--metrics-port", "0"]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return result.returncode, result.stdout + result.stderr


def _assert_hidden(password: str, output: str) -> None:
    assert password not in output
    for fragment in secret_fragments(password):
        assert fragment not in output, f"{fragment!r} of the password shows"


@pytest.mark.parametrize(("shape", "password"), POSTGRES_SHAPES)
def test_no_postgres_password_shows(
    settings: Settings, create_topic: Callable[..., str], shape: str, password: str
) -> None:
    create_topic(settings.kafka.dlq_topic, 1)
    env = {
        **worker_env(settings),
        "DATABASE_URL": shape.format(password=password, port=free_port()),
        "CONSUMER_DATABASE_CONNECT_TIMEOUT": "1",
        "CONSUMER_DATABASE_CHECKOUT_TIMEOUT": "1",
    }
    code, output = _run(settings, env)
    assert code != 0, output  # nothing listens there
    assert "starting:" in output or "configuration error" in output, output
    _assert_hidden(password, output)


@pytest.mark.parametrize(("shape", "password"), REDIS_SHAPES)
def test_no_redis_password_shows(
    settings: Settings, create_topic: Callable[..., str], shape: str, password: str
) -> None:
    create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    env = {**worker_env(settings), "REDIS_URL": shape.format(password=password, port=free_port())}
    code, output = _run(settings, env)
    assert "starting:" in output, output
    _assert_hidden(password, output)
    assert code in (0, 1), output
