"""The whole worker against the real broker, database and cache: every event saved, every
offset committed, and nothing lost when a commit fails after a write."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
import pytest
from arroyo.types import Commit, Partition
from confluent_kafka import Producer

from consumer import metrics
from consumer.kafka_admin import committed_offsets
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.message import MessageDecoder
from consumer.settings import Settings
from consumer.storage.nodestore import event_node_id, occurrence_node_id
from consumer.worker import Worker, run_worker
from tests.integration.helpers import end_offsets, make_project, nodestore_documents, produce_events
from tests.unit.pipeline.samples import expected_document

pytestmark = pytest.mark.integration


def _until_idle(settings: Settings, seconds: float = 2.0) -> Settings:
    return dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, exit_when_idle=seconds)
    )


def _check_saved(db: psycopg.Connection[Any], sent: list[dict[str, Any]]) -> None:
    event_ids = [event_node_id(m["project_id"], m["event_id"]) for m in sent]
    occurrence_ids = [occurrence_node_id(m["id"], m["project_id"]) for m in sent]
    events = nodestore_documents(db, event_ids)
    occurrences = nodestore_documents(db, occurrence_ids)
    assert len(events) == len(sent), f"{len(sent) - len(events)} events missing from the nodestore"
    assert len(occurrences) == len(sent)
    for message, node_id, occurrence_node in zip(sent, event_ids, occurrence_ids, strict=True):
        stored = events[node_id]
        event = message["event"]
        assert stored["event_id"] == message["event_id"]
        assert stored["project"] == message["project_id"] if "project" in stored else True
        assert stored.get("release") == event.get("release")
        assert stored.get("environment") == event.get("environment")
        assert stored.get("platform") == event.get("platform")
        if event.get("request"):
            # Relay moves a query string out of the URL into `request.query_string`
            assert stored["request"]["url"] == event["request"]["url"].split("?", 1)[0]
        assert isinstance(stored["nodestore_insert"], float)
        assert occurrences[occurrence_node] == expected_document(message)


def _relay_process(settings: Settings, mode: str) -> Settings:
    return dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, relay_process=mode)
    )


@pytest.mark.parametrize("relay_process", ["off", "on"])
def test_every_event_saved_and_offsets_committed(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
    relay_process: str,
) -> None:
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 4)
    sent = produce_events(producer, topic, capture_events(400, seed=7), [project_id])

    settings = _relay_process(settings, relay_process)
    assert run_worker(_until_idle(settings), install_signals=False) == 0

    _check_saved(db, sent)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )
    assert sum(end_offsets(settings, topic).values()) == 400


class CommitFails(Exception):
    pass


def test_commit_failing_after_write_loses_nothing(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """The first commit after a batch write fails (as a crash between write and commit would):
    the worker stops without committing; a restarted worker saves everything, each event once."""
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 2)
    sent = produce_events(producer, topic, capture_events(300, seed=11), [project_id])
    settings = dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, batch_size=50)
    )
    calls: list[Mapping[Partition, int]] = []

    def failing(commit: Commit) -> Commit:
        class Failing:
            def __call__(self, offsets: Mapping[Partition, int], force: bool = False) -> None:
                if offsets:
                    calls.append(offsets)
                    raise CommitFails("the broker went away between the write and the commit")
                commit(offsets, force)

        return Failing()

    assert run_worker(_until_idle(settings), install_signals=False, wrap_commit=failing) == 1
    assert calls, "the worker never reached a commit"
    written_before = db.execute("SELECT count(*) FROM nodestore_node").fetchone()
    assert written_before is not None and written_before[0] > 0, (
        "the batch was not written before the commit"
    )
    assert committed_offsets(settings, topic, settings.kafka.group_id) == {0: -1001, 1: -1001}

    assert run_worker(_until_idle(settings), install_signals=False) == 0

    _check_saved(db, sent)
    ids = [event_node_id(m["project_id"], m["event_id"]) for m in sent]
    rows = db.execute(
        "SELECT count(*), count(DISTINCT id) FROM nodestore_node WHERE id = ANY(%s)", (ids,)
    ).fetchone()
    assert rows == (300, 300)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_a_relay_process_killed_mid_stream_loses_nothing(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """The worker's Relay process is killed (SIGKILL: out of memory, say) while batches are
    in flight: a new one takes the batch, and every event is saved and committed."""
    _org, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 2)
    sent = produce_events(producer, topic, capture_events(1500, seed=13), [project_id])
    settings = _relay_process(settings, "on")
    settings = dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, batch_size=50)
    )
    worker = Worker(_until_idle(settings))
    saved_before = metrics.total(metrics.MESSAGES)  # the counter is the test session's
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(worker.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and metrics.total(metrics.MESSAGES) == saved_before:
            time.sleep(0.01)
        assert worker.factory is not None, "the worker did not start"
        decoder = worker.factory.classify.decoder
        assert isinstance(decoder, MessageDecoder) and decoder.relay is not None
        pid = decoder.relay.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    finally:
        thread.join(120)
    assert exit_codes == [0]
    assert decoder.relay.restarts == 1
    _check_saved(db, sent)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )
