"""The worker as a Kafka citizen on the real broker: partitions split across a group, a member
leaving mid-stream, a save slower than max.poll.interval.ms, dead letters with their headers and
their replay, and several processes behind one supervisor."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from consumer.kafka_admin import committed_offsets
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.job import Job
from consumer.replay import replay
from consumer.settings import Settings
from consumer.storage.nodestore import event_node_id
from consumer.strategy.save_and_dead_letter import Pipeline
from consumer.worker import Worker
from tests.integration.helpers import (
    end_offsets,
    free_port,
    make_project,
    produce_events,
    produce_raw,
    read_topic,
    scrape,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.integration


def _with(settings: Settings, section: str, **changes: Any) -> Settings:
    return dataclasses.replace(
        settings, **{section: dataclasses.replace(getattr(settings, section), **changes)}
    )


class SlowSaver:
    """Wraps the real saver: sleeps before some saves (the sleeps are the test's fault injection)."""

    def __init__(self, inner: Pipeline, delays: Callable[[int], float]) -> None:
        self.inner = inner
        self.delays = delays
        self.calls = 0

    def save(self, jobs: Sequence[Job]) -> None:
        self.calls += 1
        time.sleep(self.delays(self.calls))
        self.inner.save(jobs)


def _saved_count(db: psycopg.Connection[Any], sent: list[dict[str, Any]]) -> int:
    ids = [event_node_id(m["project_id"], m["event_id"]) for m in sent]
    row = db.execute("SELECT count(*) FROM nodestore_node WHERE id = ANY(%s)", (ids,)).fetchone()
    assert row is not None
    return int(row[0])


def test_two_workers_split_the_partitions_and_one_leaving_loses_nothing(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 4)
    sent = produce_events(producer, topic, capture_events(1600, seed=3), [project_id])
    settings = _with(settings, "worker", batch_size=40, exit_when_idle=3.0)

    slow: list[SlowSaver] = []

    def slowly(inner: Pipeline) -> Pipeline:
        saver = SlowSaver(inner, lambda _call: 0.15)
        slow.append(saver)
        return saver

    first = Worker(settings, wrap_pipeline=slowly)
    second = Worker(settings, wrap_pipeline=slowly)
    codes: dict[str, int] = {}
    threads = [
        threading.Thread(target=lambda: codes.__setitem__("first", first.run())),
        threading.Thread(target=lambda: codes.__setitem__("second", second.run())),
    ]
    threads[0].start()
    wait_for(lambda: first.factory is not None and len(first.factory.assignments) >= 1, 30)
    threads[1].start()

    def split() -> bool:
        if first.factory is None or second.factory is None or not second.factory.assignments:
            return False
        mine, theirs = first.factory.assignments[-1], second.factory.assignments[-1]
        return bool(mine) and bool(theirs) and not (mine & theirs) and len(mine | theirs) == 4

    wait_for(split, 60)
    assert first.factory is not None and second.factory is not None
    mid_stream = _saved_count(db, sent)
    assert mid_stream < len(sent), "the stream was over before the second worker joined"

    first.stop()  # the first member leaves mid-stream; the second must take over its partitions
    threads[0].join(60)
    assert codes.get("first") == 0
    wait_for(lambda: second.factory is not None and len(second.factory.assignments[-1]) == 4, 60)
    threads[1].join(120)
    assert codes.get("second") == 0

    assert _saved_count(db, sent) == len(sent)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_a_save_slower_than_max_poll_interval_does_not_get_the_worker_evicted(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 2)
    sent = produce_events(producer, topic, capture_events(120, seed=5), [project_id])
    settings = _with(settings, "kafka", max_poll_interval_ms=8_000, session_timeout_ms=6_000)
    settings = _with(settings, "worker", batch_size=50, exit_when_idle=3.0, join_timeout=5.0)

    def slow_first(inner: Pipeline) -> Pipeline:
        return SlowSaver(
            inner, lambda call: 14.0 if call == 1 else 0.0
        )  # 14 s > 8 s max poll interval

    worker = Worker(settings, wrap_pipeline=slow_first)
    assert worker.run() == 0

    assert worker.factory is not None
    assert len(worker.factory.assignments) == 1, (
        f"the worker was rebalanced: {worker.factory.assignments}"
    )
    assert _saved_count(db, sent) == len(sent)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_bad_messages_are_dead_lettered_with_reason_and_origin_and_can_be_replayed(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    good = produce_events(producer, topic, capture_events(30, seed=9), [project_id])
    bad = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"id": "x", "project_id": "seven", "fingerprint": []}),
    ]
    produce_raw(producer, topic, bad, key=b"k")
    settings = _with(settings, "worker", exit_when_idle=2.0)

    assert Worker(settings).run() == 0

    assert _saved_count(db, good) == len(good)
    letters = read_topic(settings, settings.kafka.dlq_topic, expected=3)
    assert [letter.value() for letter in letters] == bad
    for index, letter in enumerate(letters):
        headers = {key: value.decode() for key, value in letter.headers()}
        assert headers["original_topic"] == topic
        assert headers["original_partition"] == "0"
        assert headers["original_offset"] == str(len(good) + index)
        assert headers["reason"] in {"invalid_json", "not_an_object", "schema_violation"}
        assert letter.key() == b"k"
    assert committed_offsets(settings, topic, settings.kafka.group_id) == {0: len(good) + 3}

    # None of these reasons is replayable by default; asking for one by name replays just it.
    assert replay(settings).replayed == 0
    report = replay(settings, reasons=["invalid_json"])
    assert report.replayed == 1
    replayed = read_topic(settings, topic, expected=len(good) + 4)
    assert replayed[-1].value() == b"{not json"
    assert dict(replayed[-1].headers())["replayed_from_dlq_offset"] == b"0:0"
    assert replay(settings, reasons=["invalid_json"]).replayed == 0, (
        "a dead letter was replayed twice"
    )


def test_several_processes_behind_one_supervisor(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """`consumer run --processes 2`: both workers consume, /metrics sums them, /healthz answers,
    SIGTERM drains them and the supervisor exits 0."""
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 4)
    sent = produce_events(producer, topic, capture_events(800, seed=13), [project_id])
    port = free_port()
    process = start_worker(
        settings, "--processes", "2", "--metrics-port", str(port), "--batch-size", "50", topic=topic
    )
    try:
        wait_for(lambda: _saved_count(db, sent) == len(sent), 120)
        wait_for(lambda: scrape(port, "/healthz")[0] == 200, 30)
        body = scrape(port, "/metrics")[1]
        saved = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith('consumer_messages_total{outcome="saved"')
        )
        assert saved == len(sent)
        assert "consumer_up 2.0" in body
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert output.count("drained and stopped") >= 2
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_events_of_an_unknown_project_are_replayed_once_it_exists(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """Events for a project that does not exist yet are dead-lettered as `unknown_project`; once
    the project is created, `dlq replay` (default selection) puts them back and they are saved."""
    org_id, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 2)
    create_topic(settings.kafka.dlq_topic, 1)
    missing_project = 900_000 + int(unique[:4], 16)
    known = produce_events(producer, topic, capture_events(40, seed=17), [project_id])
    orphans = produce_events(
        producer, topic, capture_events(25, seed=18), [missing_project], seed=2
    )
    settings = _with(settings, "worker", exit_when_idle=2.0)

    assert Worker(settings).run() == 0
    assert _saved_count(db, known) == len(known)
    assert _saved_count(db, orphans) == 0
    letters = read_topic(settings, settings.kafka.dlq_topic, expected=len(orphans))
    assert len(letters) == len(orphans)
    assert {dict(letter.headers())["reason"] for letter in letters} == {b"unknown_project"}

    from consumer.storage.admin import create_project

    create_project(db, org_id, f"late-{unique}", project_id=missing_project)
    report = replay(settings)
    assert (report.read, report.replayed) == (len(orphans), len(orphans))
    assert Worker(settings).run() == 0

    assert _saved_count(db, orphans) == len(orphans)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )
    assert replay(settings).replayed == 0, "a dead letter was replayed twice"
