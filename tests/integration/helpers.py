"""Small helpers shared by integration tests."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.loadgen.occurrences import wrap_event
from consumer.settings import Settings
from consumer.storage.admin import create_organization, create_project
from consumer.storage.nodestore import decode_blob


def make_project(
    conn: psycopg.Connection[Any], unique: str, *, org_slug: str | None = None
) -> tuple[int, int]:
    """Create an organization and a project named after the test; return (org_id, project_id)."""
    org_id = create_organization(conn, org_slug or f"org-{unique}")
    project_id = create_project(conn, org_id, f"proj-{unique}")
    return org_id, project_id


def produce_events(
    producer: Producer,
    topic: str,
    events: Iterable[dict[str, Any]],
    project_ids: Sequence[int],
    seed: int = 1,
) -> list[dict[str, Any]]:
    """Wrap each event as an occurrence and produce it; return the decoded messages sent."""
    rng = random.Random(seed)
    sent = []
    for index, event in enumerate(events):
        key, value = wrap_event(event, project_ids[index % len(project_ids)], rng)
        producer.produce(topic, value=value, key=key)
        sent.append(orjson.loads(value))
        if index % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return sent


def produce_raw(
    producer: Producer, topic: str, values: Iterable[bytes | None], key: bytes | None = None
) -> None:
    for value in values:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def nodestore_documents(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT id, data FROM nodestore_node WHERE id = ANY(%s)", (list(ids),)
    ).fetchall()
    return {row[0]: decode_blob(row[1])[0] for row in rows}


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    client = Consumer({**settings.kafka.client_config(), "group.id": "offsets-reader"})
    try:
        metadata = client.list_topics(topic, timeout=10)
        result = {}
        for partition in metadata.topics[topic].partitions:
            _low, high = client.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            result[partition] = high
        return result
    finally:
        client.close()


def read_topic(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Read `expected` messages from the start of `topic` (e.g. the dead-letter topic)."""
    import time
    import uuid

    client = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    client.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            message = client.poll(0.5)
            if message is None or message.error():
                continue
            messages.append(message)
    finally:
        client.close()
    return messages


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment for a `consumer` subprocess talking to the test's services."""
    import os

    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DATABASE_URL": settings.database.url.reveal(),
        "REDIS_URL": settings.redis.url.reveal(),
        "CONSUMER_REDIS_KEY_PREFIX": settings.redis.key_prefix,
    }


def start_worker(
    settings: Settings, *flags: str, topic: str | None = None
) -> subprocess.Popen[str]:
    """`consumer run` as a subprocess on the test's topic, group and dead-letter topic."""
    import os
    import sys

    command = [sys.executable, "-m", "consumer", "--config", os.devnull, "run"]
    command += ["--topic", topic or settings.kafka.topic, "--dlq-topic", settings.kafka.dlq_topic]
    command += ["--group", settings.kafka.group_id, *flags]
    return subprocess.Popen(
        command,
        env=worker_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """(HTTP status, body) of a GET on the worker's endpoint; (0, "") when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
    except OSError:
        return 0, ""


def metrics_text(port: int) -> str | None:
    """The worker's `/metrics` page; None while it does not answer it with 200."""
    status, text = scrape(port)
    return text if status == 200 else None


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout}s")
