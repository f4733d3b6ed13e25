"""The nodestore on the real PostgreSQL: 10,000 events in one statement and back, blobs written
the way Sentry writes them, idempotent upserts, deletes and cleanup."""

from __future__ import annotations

import base64
import copy
import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumer.loadgen.sdk import capture_events
from consumer.storage.nodestore import SMALL_WRITE, encode_blob, event_node_id
from consumer.storage.store import Storage
from tests.integration.storage.conftest import StatementCounter

EVENTS = 10_000


@pytest.fixture(scope="module")
def sdk_events() -> list[dict[str, Any]]:
    return capture_events(60, seed=3)


def test_ten_thousand_events_round_trip(
    storage: Storage, statements: StatementCounter, sdk_events: list[dict[str, Any]]
) -> None:
    documents: dict[str, dict[str, Any]] = {}
    for index in range(EVENTS):
        event = copy.deepcopy(sdk_events[index % len(sdk_events)])
        event["event_id"] = uuid.uuid4().hex
        event["project"] = 1 + index % 7
        event["nodestore_insert"] = 1_700_000_000.5 + index
        documents[event_node_id(event["project"], event["event_id"])] = event
    assert len(documents) == EVENTS

    nodes = [(node_id, encode_blob(doc)) for node_id, doc in documents.items()]
    with statements.measure() as sent:
        written = storage.nodestore.set_many_encoded(nodes)
    assert written == EVENTS
    # Staging table, COPY (not an execute(), so not counted here), one upsert: 10,000 events.
    assert len(sent) == 2
    assert sent[0].startswith("CREATE TEMP TABLE IF NOT EXISTS nodestore_incoming")
    assert "INSERT INTO nodestore_node" in sent[1]

    with statements.measure() as sent:
        read = storage.nodestore.get_multi(list(documents))
    assert len(sent) == 1
    assert read == documents
    some = next(iter(documents))
    assert storage.nodestore.get(some) == documents[some]
    assert storage.nodestore.get("0" * 32) is None


def sentry_blob(main: Any, **subkeys: Any) -> str:
    """A `data` value exactly as Sentry's Django nodestore writes it."""

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True)

    blob = dumps(main) + "".join(f"\n{name}\n{dumps(doc)}" for name, doc in subkeys.items())
    return base64.b64encode(zlib.compress(blob.encode("utf-8"))).decode("ascii")


def test_reads_a_blob_written_by_sentry(storage: Storage, db: psycopg.Connection[Any]) -> None:
    node_id = event_node_id(42, uuid.uuid4().hex)
    main = {
        "message": "naïve ☃ \u2028",
        "tags": [["level", "error"], ["sentry:release", "web@1.0"]],
        "measurement": float("nan"),
        "ratio": float("inf"),
        "extra": {"b": 2, "a": 1},
    }
    db.execute(
        "INSERT INTO nodestore_node (id, data, timestamp) VALUES (%s, %s, now())",
        (node_id, sentry_blob(main, unprocessed={"raw": True})),
    )
    document = storage.nodestore.get(node_id)
    assert document["message"] == "naïve ☃ \u2028"
    assert document["tags"] == main["tags"]
    assert document["extra"] == {"a": 1, "b": 2}
    assert document["measurement"] != document["measurement"]  # NaN
    assert document["ratio"] == float("inf")
    assert storage.nodestore.get(node_id, subkey="unprocessed") == {"raw": True}
    assert storage.nodestore.get(node_id, subkey="missing") is None


def test_writes_are_upserts_stamped_with_the_write_time(
    storage: Storage, db: psycopg.Connection[Any]
) -> None:
    node_id = event_node_id(1, uuid.uuid4().hex)
    early = datetime(2024, 1, 1, tzinfo=UTC)
    storage.nodestore.set_many({node_id: {"v": 1}}, now=early)
    storage.nodestore.set_many_encoded(
        [(node_id, encode_blob({"v": 2})), (node_id, encode_blob({"v": 3}))]
    )
    assert storage.nodestore.get(node_id) == {"v": 3}  # last writer wins, one row
    row = db.execute("SELECT timestamp FROM nodestore_node WHERE id = %s", (node_id,)).fetchone()
    assert row is not None and row[0] > early

    storage.nodestore.set(node_id, {"v": 4}, {"unprocessed": {"raw": 1}})
    assert storage.nodestore.get(node_id) == {"v": 4}
    assert storage.nodestore.get(node_id, subkey="unprocessed") == {"raw": 1}


@pytest.mark.parametrize("rows", [1, SMALL_WRITE, SMALL_WRITE + 1, 300])
def test_small_and_large_writes_upsert_alike(
    storage: Storage, statements: StatementCounter, db: psycopg.Connection[Any], rows: int
) -> None:
    """A few rows take one INSERT ... VALUES; more take the staged COPY; both are upserts."""
    ids = [event_node_id(7, uuid.uuid4().hex) for _ in range(rows)]
    storage.nodestore.set_many({node_id: {"v": 1} for node_id in ids})
    with statements.measure() as sent:
        written = storage.nodestore.set_many_encoded(
            [(node_id, encode_blob({"v": 2})) for node_id in ids]
        )
    assert written == rows
    assert len(sent) == (
        1 if rows <= SMALL_WRITE else 2
    )  # the COPY of the large path is not counted
    assert storage.nodestore.get_multi(ids) == {node_id: {"v": 2} for node_id in ids}
    count = db.execute("SELECT count(*) FROM nodestore_node WHERE id = ANY(%s)", (ids,)).fetchone()
    assert count == (rows,)


def test_delete_and_cleanup(storage: Storage, db: psycopg.Connection[Any]) -> None:
    ids = [event_node_id(2, uuid.uuid4().hex) for _ in range(6)]
    old = datetime.now(UTC) - timedelta(days=40)
    storage.nodestore.set_many({node_id: {"i": i} for i, node_id in enumerate(ids[:3])}, now=old)
    storage.nodestore.set_many({node_id: {"i": i} for i, node_id in enumerate(ids[3:])})

    storage.nodestore.delete(ids[3])
    assert storage.nodestore.delete_multi([ids[4], "absent"]) == 1
    assert set(storage.nodestore.get_multi(ids)) == {ids[0], ids[1], ids[2], ids[5]}

    assert storage.nodestore.cleanup(timedelta(days=30)) >= 3
    assert set(storage.nodestore.get_multi(ids)) == {ids[5]}
    assert storage.nodestore.cleanup(datetime.now(UTC) - timedelta(days=30)) == 0
    assert storage.nodestore.get(ids[5]) == {"i": 2}
