"""Every Sentry sample event, wrapped as an occurrence, decoded and saved against the fake
storage, and checked field by field against Sentry's rules (`samples.check_stored_event`); the
same on events from the real sentry-sdk client. The two samples that are not valid JSON are
bad messages."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.errors import BadMessage
from consumer.loadgen.occurrences import wrap_event
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.job import Job
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.message import MessageDecoder
from consumer.pipeline.releases import is_valid_version
from consumer.pipeline.save import OccurrencePipeline
from consumer.storage.nodestore import event_node_id, occurrence_node_id
from tests.unit.pipeline.builders import PROJECT_ID
from tests.unit.pipeline.samples import check_stored_event, expected_document, load_samples, wrap

NOT_JSON = {"invalid-interfaces.json", "ruby.json"}


def _save_and_check(
    decoder: MessageDecoder, storage: MemoryStorage, values: list[bytes]
) -> list[dict[str, Any]]:
    jobs = []
    for value in values:
        job = decoder(value)
        assert isinstance(job, Job)
        jobs.append(job)
    OccurrencePipeline(storage).save(jobs)
    assert [job.outcome for job in jobs if job.outcome is not None] == []
    stored_events = []
    for value in values:
        message = orjson.loads(value)
        stored = storage.nodestore.document(
            event_node_id(message["project_id"], message["event_id"])
        )
        release = stored.get("release")
        check_stored_event(
            message, stored, has_release_row=bool(release) and is_valid_version(release)
        )
        occurrence = storage.nodestore.document(
            occurrence_node_id(message["id"], message["project_id"])
        )
        assert occurrence == expected_document(message)
        stored_events.append(stored)
    return stored_events


def test_every_sample_saved_as_sentry_would(
    samples_dir: Path, decoder: MessageDecoder, storage: MemoryStorage
) -> None:
    samples = load_samples(samples_dir)
    assert len(samples) == 48
    rng = random.Random(8)
    good: list[bytes] = []
    for sample in samples:
        _key, value = wrap(sample, PROJECT_ID, rng)
        if sample.name in NOT_JSON:
            assert sample.event is None
            with pytest.raises(BadMessage) as raised:
                decoder(value)
            assert raised.value.reason == "invalid_json"
        elif not sample.accepted:
            with pytest.raises(BadMessage) as raised:
                decoder(value)
            assert raised.value.reason == "invalid_event_payload"
        else:
            good.append(value)
    stored = _save_and_check(decoder, storage, good)
    assert len(stored) == 44
    by_title = {event["title"]: event for event in stored}
    # A few outcomes spelled out, so a rule that silently stops applying shows up here.
    assert any(
        event["culprit"].endswith(" in iter") or " in " in event["culprit"] for event in stored
    )
    assert any(pair[0] == "sentry:release" for event in stored for pair in event["tags"])
    assert any(pair[0] == "sentry:user" for event in stored for pair in event["tags"])
    assert any(pair[0] == "url" for event in stored for pair in event["tags"])
    assert len(by_title) >= 10


def test_sdk_events_saved_as_sentry_would(decoder: MessageDecoder, storage: MemoryStorage) -> None:
    rng = random.Random(9)
    values = [wrap_event(event, PROJECT_ID, rng)[1] for event in capture_events(150, seed=21)]
    stored = _save_and_check(decoder, storage, values)
    tags = [dict(pair for pair in event["tags"]) for event in stored]
    assert any("browser.name" in t for t in tags), "user agents make browser contexts and tags"
    assert any("sentry:user" in t and t["sentry:user"].startswith("ip:") for t in tags)
    assert any("environment" not in t for t in tags) and any("environment" in t for t in tags)
    assert {event["culprit"] for event in stored} & {"checkout.views.submit"}
