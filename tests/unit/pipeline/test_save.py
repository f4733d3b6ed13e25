"""The save step against the fake storage: outcomes per job, one storage call per kind and
batch, the nodestore rows, per-step timings, and retries that leave no trace."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from consumer import metrics
from consumer.errors import TransientError
from consumer.pipeline.job import Job
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.message import MessageDecoder
from consumer.pipeline.save import OccurrencePipeline
from consumer.pipeline.toplevel import pull_out
from consumer.storage.nodestore import event_node_id, occurrence_node_id
from tests.unit.pipeline.builders import encode, event, occurrence


def _jobs(decoder: MessageDecoder, messages: list[dict[str, Any]]) -> list[Job]:
    made = []
    for message in messages:
        result = decoder(encode(message))
        assert isinstance(result, Job)
        made.append(result)
    return made


def _message(project_id: int = 1, **event_fields: Any) -> dict[str, Any]:
    return occurrence(event(project_id=project_id, **event_fields))


def test_outcomes_per_job(decoder: MessageDecoder, storage: MemoryStorage) -> None:
    storage.add_project(2, 1, deleted=True)
    storage.add_organization(3)
    storage.add_project(4, 3)
    storage.add_organization(5, deleted=True)
    storage.add_project(6, 5)
    storage.add_project(7, 99)  # its organization does not exist
    messages = [_message(p) for p in (1, 2, 4, 6, 7, 8, 1)]
    jobs = _jobs(decoder, messages)
    OccurrencePipeline(storage).save(jobs)
    outcomes = {i: job.outcome for i, job in enumerate(jobs) if job.outcome is not None}
    assert {i: (o.kind, o.reason) for i, o in outcomes.items()} == {
        1: ("skipped", "project_deleted"),
        3: ("skipped", "organization_deleted"),
        4: ("rejected", "unknown_organization"),
        5: ("rejected", "unknown_project"),
    }
    assert all(o.detail for o in outcomes.values() if o.kind == "rejected")
    saved = [messages[i] for i in (0, 2, 6)]
    rows = storage.nodestore.rows
    assert len(rows) == 2 * len(saved)
    for message in saved:
        assert event_node_id(message["project_id"], message["event_id"]) in rows
        assert occurrence_node_id(message["id"], message["project_id"]) in rows


def test_one_storage_call_per_kind_for_the_whole_batch(
    decoder: MessageDecoder, storage: MemoryStorage
) -> None:
    storage.add_project(2, 1)
    messages = [
        _message(1 + i % 2, release=f"r{i % 3}", dist="7", environment=["prod", "dev", None][i % 3])
        for i in range(30)
    ]
    OccurrencePipeline(storage).save(_jobs(decoder, messages))
    assert storage.calls == [
        "projects",
        "organizations",
        "releases",
        "distributions",
        "project_options",
        "environments",
        "save_groups",
    ]
    assert len(storage.release_rows) == 3 and len(storage.environment_rows) == 3
    assert len(storage.nodestore.rows) == 60


def test_an_empty_batch_costs_nothing(storage: MemoryStorage) -> None:
    OccurrencePipeline(storage).save([])
    assert storage.calls == []


def test_project_options_reach_the_plugins(decoder: MessageDecoder, storage: MemoryStorage) -> None:
    storage.options[1] = {"auto_tag:_urls:enabled": False}
    message = _message(request={"url": "https://x/"})
    OccurrencePipeline(storage).save(_jobs(decoder, [message]))
    stored = storage.nodestore.document(event_node_id(1, message["event_id"]))
    assert "url" not in dict(pair for pair in stored["tags"])


def test_step_timings_are_observed_once_per_batch(
    decoder: MessageDecoder, storage: MemoryStorage
) -> None:
    steps = [
        "projects",
        "organizations",
        "releases",
        "event_users",
        "plugin_tags",
        "interface_tags",
        "metadata",
        "environments",
        "event_metrics",
        "nodestore",
        "decode",
        "normalize",
        "pull_out",
    ]

    def counts() -> dict[str, float]:
        found = dict.fromkeys(steps, 0.0)
        for metric in metrics.STEP_DURATION.collect():
            for sample in metric.samples:
                if sample.name.endswith("_count") and sample.labels["step"] in found:
                    found[sample.labels["step"]] = sample.value
        return found

    before = counts()
    OccurrencePipeline(storage).save(_jobs(decoder, [_message(release="r1"), _message()]))
    after = counts()
    assert {step: after[step] - before[step] for step in steps} == dict.fromkeys(steps, 1.0)


def _stored(storage: MemoryStorage, message: dict[str, Any]) -> Any:
    return storage.nodestore.document(event_node_id(message["project_id"], message["event_id"]))


def test_a_retry_after_a_failed_write_writes_the_same_rows(
    decoder: MessageDecoder, storage: MemoryStorage
) -> None:
    messages = [_message(release="r1", environment="prod", user={"id": "1"}) for _ in range(3)]
    jobs = _jobs(decoder, messages)
    storage.nodestore.fail_next = 1
    saver = OccurrencePipeline(storage)
    with pytest.raises(TransientError):
        saver.save(jobs)
    assert storage.nodestore.rows == {}
    first_rows = [job.nodes for job in jobs]
    saver.save(jobs)
    assert [job.nodes for job in jobs] == first_rows  # not re-encoded
    stored = _stored(storage, messages[0])
    tags = [pair[0] for pair in stored["tags"]]
    assert len(tags) == len(set(tags))
    assert stored["_metrics"]["bytes.stored.event"] == len(
        orjson.dumps(
            {**{k: v for k, v in stored.items() if k != "nodestore_insert"}, "_metrics": {}}
        ).decode()
    )


def test_a_retry_after_a_failed_read_starts_from_untouched_events(
    decoder: MessageDecoder, storage: MemoryStorage
) -> None:
    messages = [_message(release="r1", environment="prod", request={"url": "https://x/"})]
    jobs = _jobs(decoder, messages)
    pristine = copy.deepcopy(jobs[0].data)
    real_environments = storage.environments

    def unavailable(requests: Any) -> Any:
        raise TransientError("down")

    storage.environments = unavailable  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        OccurrencePipeline(storage).save(jobs)
    # Only the event's completion ran (user agents, pull-out); every other step waits for the
    # reads, which happen before any tag, metadata or metric is written.
    completed = Job(1, "e", "o", pristine, b"{}")
    pull_out(completed)
    assert jobs[0].data == completed.data
    storage.environments = real_environments  # type: ignore[method-assign]
    OccurrencePipeline(storage).save(jobs)

    clean = MemoryStorage()
    clean.add_organization(1)
    clean.add_project(1, 1)
    reference = _jobs(decoder, messages)
    OccurrencePipeline(clean).save(reference)
    retried, expected = _stored(storage, messages[0]), _stored(clean, messages[0])
    sizes = []
    for document in (retried, expected):
        document.pop("nodestore_insert")
        # `received` is the normalization time: its length may differ by a digit
        sizes.append(
            document["_metrics"].pop("bytes.stored.event")
            - len(orjson.dumps(document.pop("received")))
        )
    assert retried == expected
    assert sizes[0] == sizes[1]


def test_event_age_is_observed_from_the_messages_received_time(
    decoder: MessageDecoder, storage: MemoryStorage
) -> None:
    def observed() -> tuple[float, float]:
        for metric in metrics.EVENT_AGE.collect():
            count = next(s.value for s in metric.samples if s.name.endswith("_count"))
            total = next(s.value for s in metric.samples if s.name.endswith("_sum"))
            return count, total
        raise AssertionError("no event age histogram")

    count, total = observed()
    hour_ago = time.time() - 3600
    messages = [
        _message(received=hour_ago),
        _message(received=datetime.fromtimestamp(hour_ago, UTC).isoformat()),
        _message(received=datetime.fromtimestamp(hour_ago, UTC).strftime("%Y-%m-%dT%H:%M:%S")),
        _message(received=None),  # no age to tell
    ]
    OccurrencePipeline(storage).save(_jobs(decoder, messages))
    new_count, new_total = observed()
    assert new_count - count == 3
    assert 3 * 3599 <= new_total - total <= 3 * 3700
