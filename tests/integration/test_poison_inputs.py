"""No message can stop the worker (issue 17), on the real broker: each hostile input alone between
two good messages in a topic of its own is dead-lettered or recorded with its reason, the good
messages around it are saved, the committed offsets reach the end, and the worker exits 0 when
idle."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from arroyo.backends.kafka import KafkaPayload
from confluent_kafka import Producer

from consumer.errors import ConfigurationError
from consumer.kafka_admin import committed_offsets
from consumer.loadgen.sdk import capture_events
from consumer.replay import replay
from consumer.settings import Settings
from consumer.storage.nodestore import event_node_id
from consumer.strategy.dlq import DeadLetter, DeadLetterProducer, dead_letter_limit
from consumer.worker import Worker
from tests.integration.conftest import KAFKA
from tests.integration.helpers import (
    end_offsets,
    make_project,
    nodestore_documents,
    produce_events,
    read_topic,
)

pytestmark = pytest.mark.integration


def _idle(settings: Settings, **worker: Any) -> Settings:
    return dataclasses.replace(
        settings,
        worker=dataclasses.replace(settings.worker, exit_when_idle=2.0, **worker),
    )


def _saved(db: psycopg.Connection[Any], sent: Sequence[dict[str, Any]]) -> int:
    ids = [event_node_id(m["project_id"], m["event_id"]) for m in sent]
    row = db.execute("SELECT count(*) FROM nodestore_node WHERE id = ANY(%s)", (ids,)).fetchone()
    assert row is not None
    return int(row[0])


def _between_two_good(
    settings: Settings,
    db: psycopg.Connection[Any],
    producer: Producer,
    unique: str,
    send_bad: Callable[[str], None],
) -> list[dict[str, Any]]:
    """good, the bad input (`send_bad(topic)`), good; returns the good messages sent."""
    _org, project_id = make_project(db, unique)
    topic = settings.kafka.topic
    events = capture_events(2, seed=17)
    good = produce_events(producer, topic, events[:1], [project_id], seed=1)
    send_bad(topic)
    good += produce_events(producer, topic, events[1:], [project_id], seed=2)
    return good


def _headers(message: Any) -> dict[str, bytes]:
    return {key: value for key, value in message.headers() or []}


def _run_and_check_around(
    settings: Settings, db: psycopg.Connection[Any], good: Sequence[dict[str, Any]]
) -> None:
    assert Worker(_idle(settings)).run() == 0
    assert _saved(db, good) == len(good)
    topic = settings.kafka.topic
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_a_bad_message_larger_than_the_dead_letter_topic_takes_is_recorded_as_a_reference(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """Issue 17, seen 2: a dead-letter topic whose limit is smaller than what the worker sends."""
    create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1, {"max.message.bytes": "8192"})
    bad = b"not json " * 3000  # 27 kB: read whole by the worker, too large for its DLQ
    good = _between_two_good(
        settings, db, producer, unique, lambda topic: producer.produce(topic, bad, key=b"k")
    )
    _run_and_check_around(settings, db, good)

    [letter] = read_topic(settings, settings.kafka.dlq_topic, expected=1)
    headers = _headers(letter)
    assert headers["reason"] == b"invalid_json"
    assert headers["original_offset"] == b"1"
    assert b"8192" in headers["value_replaced"]
    reference = orjson.loads(letter.value())
    assert reference["topic"] == settings.kafka.topic
    assert (reference["partition"], reference["offset"]) == (0, 1)
    assert reference["value_bytes"] == len(bad)
    assert reference["value_sha256"] == hashlib.sha256(bad).hexdigest()
    assert letter.key() == b"k"


def test_a_compressed_bad_message_over_the_broker_limit_is_recorded_as_a_reference(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """Issue 17, seen 1: 12 MB of non-JSON sent gzip-compressed (the broker takes 10 MiB
    batches, this one is a few kB): dead-lettered whole it would be refused for its size."""
    create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    bad = b"x" * 12_000_000
    gzip = Producer(
        {"bootstrap.servers": KAFKA, "compression.type": "gzip", "message.max.bytes": 20_000_000}
    )

    def send(topic: str) -> None:
        producer.flush(30)
        gzip.produce(topic, bad)
        assert gzip.flush(30) == 0

    good = _between_two_good(settings, db, producer, unique, send)
    _run_and_check_around(settings, db, good)

    [letter] = read_topic(settings, settings.kafka.dlq_topic, expected=1)
    headers = _headers(letter)
    assert headers["reason"] == b"message_too_large"
    assert "value_replaced" in headers
    reference = orjson.loads(letter.value())
    assert reference["value_bytes"] == len(bad)
    assert reference["value_sha256"] == hashlib.sha256(bad).hexdigest()


def test_a_bad_message_with_a_huge_header_is_recorded_as_a_reference(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1, {"max.message.bytes": "65536"})
    good = _between_two_good(
        settings,
        db,
        producer,
        unique,
        lambda topic: producer.produce(topic, b"{", headers=[("big", b"h" * 200_000)]),
    )
    _run_and_check_around(settings, db, good)
    [letter] = read_topic(settings, settings.kafka.dlq_topic, expected=1)
    assert "big" not in _headers(letter)
    assert orjson.loads(letter.value())["headers_bytes"] == 200_003


def test_a_letter_the_broker_refuses_for_its_size_is_produced_again_as_a_reference(
    settings: Settings, create_topic: Callable[..., str]
) -> None:
    """The limit read at start can be wrong (the topic was changed since): the broker's own
    refusal (MSG_SIZE_TOO_LARGE) is not transient, the letter goes as a reference."""
    dlq = create_topic(settings.kafka.dlq_topic, 1, {"max.message.bytes": "8192"})
    letters = DeadLetterProducer(settings.kafka.client_config(), dlq, max_bytes=1_000_000)
    payload = KafkaPayload(None, b"y" * 50_000, [])
    small = KafkaPayload(None, b"z", [])
    letters.produce_and_wait(
        [
            DeadLetter(payload, "invalid_json", "", "in", 0, 5),
            DeadLetter(small, "invalid_json", "", "in", 0, 6),
        ]
    )
    letters.close()
    got = read_topic(settings, dlq, expected=2)
    assert all(len(message.value()) < 8192 for message in got)
    by_offset = {_headers(message)["original_offset"]: message for message in got}
    assert by_offset[b"6"].value() == b"z"
    assert _headers(by_offset[b"5"])["value_replaced"].startswith(b"refused by the broker")
    assert orjson.loads(by_offset[b"5"].value())["value_bytes"] == 50_000


def test_a_dead_letter_topic_too_small_for_a_reference_stops_the_start_clearly(
    settings: Settings, create_topic: Callable[..., str]
) -> None:
    create_topic(settings.kafka.dlq_topic, 1, {"max.message.bytes": "1024"})
    with pytest.raises(ConfigurationError, match=r"max\.message\.bytes"):
        dead_letter_limit(settings.kafka.client_config(), settings.kafka.dlq_topic)
    with pytest.raises(ConfigurationError, match=settings.kafka.dlq_topic):
        Worker(settings).run()


def test_the_dead_letter_limit_is_read_from_the_broker(
    settings: Settings, create_topic: Callable[..., str]
) -> None:
    create_topic(settings.kafka.dlq_topic, 1, {"max.message.bytes": "70000"})
    assert dead_letter_limit(settings.kafka.client_config(), settings.kafka.dlq_topic) == 70000
    # a topic the broker will create on first use takes what the broker's default allows
    assert dead_letter_limit(settings.kafka.client_config(), f"{settings.kafka.dlq_topic}-new") > 0


def _small_fetches(settings: Settings) -> Settings:
    """Fetch limits under which 30 MB do not decompress (the defaults take 100 MB)."""
    return dataclasses.replace(
        settings,
        kafka=dataclasses.replace(
            settings.kafka, fetch_max_bytes=10_000_000, receive_message_max_bytes=20_000_000
        ),
    )


def _zstd_producer(**config: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": KAFKA,
            "compression.type": "zstd",
            "message.max.bytes": 200_000_000,
            **config,
        }
    )


def test_a_record_that_cannot_be_decompressed_is_dead_lettered_and_skipped(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """Issue 17, seen 3: 30 MB of zstd, a few kB on the wire, more than the consumer may
    decompress: arroyo raised ConsumerError(_BAD_COMPRESSION) on every poll, and neither it nor
    the good message before it in the same fetch was ever saved."""
    settings = _small_fetches(settings)
    create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    zstd = _zstd_producer()

    def send(topic: str) -> None:
        producer.flush(30)
        zstd.produce(topic, b'{"x": "' + b"a" * 30_000_000 + b'"}', key=b"bomb")
        assert zstd.flush(30) == 0

    good = _between_two_good(settings, db, producer, unique, send)
    _run_and_check_around(settings, db, good)

    [letter] = read_topic(settings, settings.kafka.dlq_topic, expected=1)
    headers = _headers(letter)
    assert headers["reason"] == b"unreadable"
    assert headers["original_offset"] == b"1"
    assert b"offsets 1 could not be read" in headers["reason_detail"]
    assert b"compress" in headers["reason_detail"].lower()
    assert letter.value() is None


def test_an_unreadable_batch_of_several_records_is_skipped_whole_and_once(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """Offsets 1-3 in one zstd batch that cannot be read: a fetch from any of them fails at
    offset 1, so the batch is measured and skipped whole, as one dead letter."""
    settings = _small_fetches(settings)
    create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    zstd = _zstd_producer(
        **{"linger.ms": 1000, "batch.num.messages": 100, "batch.size": 1_000_000_000}
    )

    def send(topic: str) -> None:
        producer.flush(30)
        zstd.produce(topic, b"1", partition=0)
        zstd.produce(topic, b'{"x": "' + b"a" * 30_000_000 + b'"}', partition=0)
        zstd.produce(topic, b"3", partition=0)
        assert zstd.flush(30) == 0

    good = _between_two_good(settings, db, producer, unique, send)
    assert end_offsets(settings, settings.kafka.topic) == {0: 5}
    _run_and_check_around(settings, db, good)

    letters = read_topic(settings, settings.kafka.dlq_topic, expected=2, timeout=10)
    assert len(letters) == 1
    headers = _headers(letters[0])
    assert (headers["reason"], headers["original_offset"]) == (b"unreadable", b"3")
    assert b"offsets 1..3 could not be read" in headers["reason_detail"]


def test_a_tombstone_is_dead_lettered_as_a_null_value(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    good = _between_two_good(
        settings, db, producer, unique, lambda topic: producer.produce(topic, None, key=b"gone")
    )
    _run_and_check_around(settings, db, good)
    [letter] = read_topic(settings, settings.kafka.dlq_topic, expected=1)
    assert letter.value() is None
    assert letter.key() == b"gone"
    assert _headers(letter)["reason"] == b"empty_message"


def test_the_liveness_file_is_removed_at_exit(
    settings: Settings, create_topic: Callable[..., str], tmp_path: Path
) -> None:
    create_topic(settings.kafka.topic, 1)
    path = tmp_path / "live"
    worker = Worker(_idle(settings), liveness_path=path)
    assert path.exists()
    assert worker.run() == 0
    assert not path.exists(), "a stopped worker would read as alive until its file grows stale"

    create_topic(settings.kafka.dlq_topic, 1, {"max.message.bytes": "1024"})
    failing = Worker(_idle(settings), liveness_path=path)
    with pytest.raises(ConfigurationError):
        failing.run()
    assert not path.exists()


def _letter(
    producer: Producer, dlq: str, value: bytes, origin: str, *extra: tuple[str, bytes]
) -> None:
    headers: list[tuple[str, str | bytes | None]] = [
        ("reason", b"unknown_project"),
        ("original_topic", origin.encode()),
        *extra,
    ]
    producer.produce(dlq, value, headers=headers)


def test_replay_goes_to_the_input_topic_only_and_skips_what_it_cannot_replay(
    settings: Settings, create_topic: Callable[..., str], producer: Producer, unique: str
) -> None:
    """Issue 17, seen 5: a letter the broker refuses made every run exit 1 and re-produce the
    letters before it; a forged `original_topic` sent letters to any topic; forged dead-letter
    headers were carried along."""
    topic = create_topic(settings.kafka.topic, 1, {"max.message.bytes": "8192"})
    dlq = create_topic(settings.kafka.dlq_topic, 1)
    elsewhere = create_topic(f"victim-{unique}", 1)
    _letter(producer, dlq, b"a", topic, ("keep", b"1"), ("Reason", b"forged"))
    _letter(producer, dlq, b"x" * 20_000, topic)  # more than the input topic takes
    _letter(producer, dlq, b"forged", elsewhere)
    _letter(producer, dlq, b"ref", topic, ("value_replaced", b"too large"))
    _letter(
        producer, dlq, b"b", topic, ("REPLAYED_FROM_DLQ_OFFSET", b"9:9"), ("Original_Topic", b"t")
    )
    assert producer.flush(30) == 0

    first = replay(settings)
    assert (first.read, first.replayed) == (5, 2)
    assert sum(first.skipped.values()) == 3, first.skipped
    assert any("refused" in why for why in first.skipped)
    again = replay(settings)
    assert (again.read, again.replayed) == (0, 0), "a rerun re-produced letters"

    replayed = read_topic(settings, topic, expected=3, timeout=10)
    assert [message.value() for message in replayed] == [b"a", b"b"]
    for message, offset in zip(replayed, (0, 4), strict=True):
        assert message.headers() == [
            *([("keep", b"1")] if offset == 0 else []),
            ("replayed_from_dlq_offset", f"0:{offset}".encode()),
        ]
    assert read_topic(settings, elsewhere, expected=1, timeout=5) == []

    # told otherwise, a letter from another topic goes where it is told
    report = replay(settings, replay_all=True, to_topic=elsewhere)
    assert report.replayed == 4  # all but the reference: the large one fits there
    assert len(read_topic(settings, elsewhere, expected=5, timeout=10)) == 4


def test_ids_cached_in_redis_for_rows_gone_from_postgres_cannot_stop_a_batch(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """Issue 17, seen 6: release and environment rows deleted while Redis still holds their
    ids; the worker wrote links to rows that did not exist and crash-looped on
    ForeignKeyViolation. Now the write's failure drops the cache entries and the batch is
    saved again from PostgreSQL."""
    org_id, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    events = capture_events(30, seed=7)
    first = produce_events(producer, topic, events, [project_id], seed=1)
    assert Worker(_idle(settings)).run() == 0
    assert _saved(db, first) == len(first)
    versions = {m["event"]["release"] for m in first if m["event"].get("release")}
    assert versions, "the sample events carry releases"
    before = dict(
        db.execute(
            "SELECT version, id FROM sentry_release WHERE organization_id = %s", (org_id,)
        ).fetchall()
    )

    for statement, owner in [
        ("DELETE FROM sentry_distribution WHERE organization_id = %s", org_id),
        ("DELETE FROM sentry_release_project WHERE project_id = %s", project_id),
        # Groups protect their first release (Sentry's PROTECT): detached first, as a
        # release deletion in Sentry would have to.
        (
            "UPDATE sentry_groupedmessage SET first_release_id = NULL WHERE project_id = %s",
            project_id,
        ),
        ("DELETE FROM sentry_releaseprojectenvironment WHERE project_id = %s", project_id),
        ("DELETE FROM sentry_release WHERE organization_id = %s", org_id),
        ("DELETE FROM sentry_environmentproject WHERE project_id = %s", project_id),
        ("DELETE FROM sentry_environment WHERE organization_id = %s", org_id),
    ]:
        db.execute(statement, (owner,))  # Redis still holds their ids
    # A project of the same organization: the release and environment ids come from the
    # organization's cache entries, its links are not cached yet, so they are written.
    from consumer.storage.admin import create_project

    project_id = create_project(db, org_id, f"second-{unique}")
    second = produce_events(producer, topic, events, [project_id], seed=2)
    _run_and_check_around(settings, db, second)

    after = dict(
        db.execute(
            "SELECT version, id FROM sentry_release WHERE organization_id = %s", (org_id,)
        ).fetchall()
    )
    assert set(after) == versions
    assert not set(after.values()) & set(before.values()), "stale ids were written"
    linked = db.execute(
        "SELECT count(*) FROM sentry_release_project rp JOIN sentry_release r"
        " ON r.id = rp.release_id WHERE rp.project_id = %s",
        (project_id,),
    ).fetchone()
    assert linked == (len(versions),)
    environments = db.execute(
        "SELECT count(*) FROM sentry_environmentproject ep JOIN sentry_environment e"
        " ON e.id = ep.environment_id WHERE ep.project_id = %s",
        (project_id,),
    ).fetchone()
    assert environments is not None and environments[0] >= 1
    stored = nodestore_documents(
        db, [event_node_id(m["project_id"], m["event_id"]) for m in second]
    )
    assert {doc.get("release") for doc in stored.values()} - {None} == versions
