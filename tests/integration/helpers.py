"""Small helpers shared by integration tests."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
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
