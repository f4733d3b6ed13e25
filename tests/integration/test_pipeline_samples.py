"""The pipeline through the whole worker and the real services: every Sentry sample event (and
sentry-sdk events) wrapped as an occurrence is saved, and the stored nodestore documents are
checked field by field against Sentry's rules; the two samples that are not valid JSON are
dead-lettered; releases, links, dists and environments land in PostgreSQL. The sample tests
skip, saying so, where `../shared/fixtures/sentry-samples` is absent; the sentry-sdk ones never do.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from consumer.kafka_admin import committed_offsets
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.releases import is_valid_version
from consumer.settings import Settings
from consumer.storage.admin import create_project
from consumer.storage.nodestore import event_node_id, occurrence_node_id
from consumer.strategy.dlq import HEADER_REASON
from consumer.worker import run_worker
from tests.integration.helpers import (
    end_offsets,
    make_project,
    nodestore_documents,
    produce_events,
    produce_raw,
    read_topic,
)
from tests.unit.pipeline.samples import check_stored_event, expected_document, load_samples, wrap

pytestmark = pytest.mark.integration

NOT_JSON = {"invalid-interfaces.json", "ruby.json"}


def _until_idle(settings: Settings, seconds: float = 3.0) -> Settings:
    return dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, exit_when_idle=seconds)
    )


def _check_saved(
    db: psycopg.Connection[Any], organization_id: int, sent: list[dict[str, Any]]
) -> None:
    events = nodestore_documents(db, [event_node_id(m["project_id"], m["event_id"]) for m in sent])
    occurrences = nodestore_documents(
        db, [occurrence_node_id(m["id"], m["project_id"]) for m in sent]
    )
    assert len(events) == len(occurrences) == len(sent)
    releases = {
        row[0]
        for row in db.execute(
            "SELECT version FROM sentry_release WHERE organization_id = %s", (organization_id,)
        ).fetchall()
    }
    for message in sent:
        stored = events[event_node_id(message["project_id"], message["event_id"])]
        release = stored.get("release")
        assert (release in releases) == (bool(release) and is_valid_version(release))
        check_stored_event(message, stored, has_release_row=release in releases)
        occurrence = occurrences[occurrence_node_id(message["id"], message["project_id"])]
        assert occurrence == expected_document(message)
    environments = {
        row[0]
        for row in db.execute(
            "SELECT name FROM sentry_environment WHERE organization_id = %s", (organization_id,)
        ).fetchall()
    }
    stored_environments = {
        events[event_node_id(m["project_id"], m["event_id"])].get("environment") or "" for m in sent
    }
    assert stored_environments <= environments


def test_every_sample_through_the_worker(
    samples_dir: Path,
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    organization_id, project_id = make_project(db, unique)
    topic = create_topic(settings.kafka.topic, 2)
    create_topic(settings.kafka.dlq_topic, 1)
    rng = random.Random(17)
    sent: list[dict[str, Any]] = []
    bad: list[bytes] = []
    for sample in load_samples(samples_dir):
        key, value = wrap(sample, project_id, rng)
        produce_raw(producer, topic, [value], key=key)
        if sample.name in NOT_JSON:
            bad.append(b"invalid_json")
        elif not sample.accepted:
            bad.append(b"invalid_event_payload")  # Sentry refuses these two
        else:
            sent.append(orjson.loads(value))
    assert (len(sent), len(bad)) == (44, 4)

    assert run_worker(_until_idle(settings), install_signals=False) == 0

    _check_saved(db, organization_id, sent)
    letters = read_topic(settings, settings.kafka.dlq_topic, len(bad))
    assert len(letters) == len(bad)
    reasons = sorted(dict(letter.headers())[HEADER_REASON] for letter in letters)
    assert reasons == sorted(bad)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_sdk_events_through_the_worker(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    """Needs nothing outside the repository; also two projects of one organization sharing
    releases: every (release, project) pair gets its link."""
    organization_id, first = make_project(db, unique)
    second = create_project(db, organization_id, f"second-{unique}")
    topic = create_topic(settings.kafka.topic, 2)
    create_topic(settings.kafka.dlq_topic, 1)
    sent = produce_events(producer, topic, capture_events(200, seed=31), [first, second])

    assert run_worker(_until_idle(settings), install_signals=False) == 0

    _check_saved(db, organization_id, sent)
    pairs = {(m["project_id"], m["event"]["release"]) for m in sent if m["event"].get("release")}
    links = set(
        db.execute(
            """SELECT rp.project_id, r.version FROM sentry_release_project rp
               JOIN sentry_release r ON r.id = rp.release_id WHERE r.organization_id = %s""",
            (organization_id,),
        ).fetchall()
    )
    assert pairs <= links
    assert {project for project, _version in pairs} == {first, second}
    flags = dict(
        db.execute(
            "SELECT id, flags FROM sentry_project WHERE id = ANY(%s)", ([first, second],)
        ).fetchall()
    )
    assert all(flags[project] & 1 for project in (first, second)), "has_releases"
    environment_links = db.execute(
        """SELECT count(DISTINCT (ep.project_id, e.name)) FROM sentry_environmentproject ep
           JOIN sentry_environment e ON e.id = ep.environment_id WHERE e.organization_id = %s""",
        (organization_id,),
    ).fetchone()
    expected = {(m["project_id"], m["event"].get("environment") or "") for m in sent}
    assert environment_links is not None and environment_links[0] == len(expected)
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_unknown_project_dead_lettered_deleted_project_skipped(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    organization_id, live = make_project(db, unique)
    deleted = create_project(db, organization_id, f"deleted-{unique}")
    db.execute("UPDATE sentry_project SET date_deleted = now() WHERE id = %s", (deleted,))
    missing = deleted + 1_000_000
    topic = create_topic(settings.kafka.topic, 1)
    create_topic(settings.kafka.dlq_topic, 1)
    events = capture_events(6, seed=5)
    sent = produce_events(producer, topic, events, [live, deleted, missing])

    assert run_worker(_until_idle(settings), install_signals=False) == 0

    saved = nodestore_documents(db, [event_node_id(m["project_id"], m["event_id"]) for m in sent])
    assert {doc["project"] for doc in saved.values()} == {live}
    assert len(saved) == 2
    letters = read_topic(settings, settings.kafka.dlq_topic, 2)
    assert [dict(letter.headers())[HEADER_REASON] for letter in letters] == [b"unknown_project"] * 2
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )
