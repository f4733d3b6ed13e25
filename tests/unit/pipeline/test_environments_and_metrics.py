"""Environments (reference §2.7), event metrics (§2.8) and the nodestore documents (§2.9)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from consumer import metrics
from consumer.pipeline.environments import (
    apply_environments,
    environment_requests,
    resolve_environments,
)
from consumer.pipeline.event_metrics import apply_event_metrics
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.nodes import encode_nodes
from consumer.pipeline.toplevel import pull_out
from consumer.storage.nodestore import Compression, decode_blob
from tests.unit.pipeline.builders import job

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_events_without_environment_use_the_empty_name(storage: MemoryStorage) -> None:
    storage.add_project(2, 1)
    made = [
        job({"environment": "production"}),
        job({"environment": None}),
        job({}),
        job({"environment": "production"}, project_id=2),
        job({"environment": "production"}),
    ]
    requests = environment_requests(made, storage.projects_by_id, NOW)
    assert [(r.organization_id, r.project_id, r.name, r.date_added) for r in requests] == [
        (1, 1, "production", NOW),
        (1, 1, "", NOW),
        (1, 2, "production", NOW),
    ]
    apply_environments(
        made,
        storage.projects_by_id,
        resolve_environments(made, storage.projects_by_id, storage, NOW),
    )
    production = storage.environment_rows[(1, "production")].id
    empty = storage.environment_rows[(1, "")].id
    assert [m.environment_id for m in made] == [production, empty, empty, production, production]
    assert storage.environment_links == {(production, 1), (empty, 1), (production, 2)}
    assert storage.calls == ["environments"]


@pytest.mark.parametrize(
    "data",
    [
        {"message": "plain ascii"},
        {"message": "naïve ☃ — 日本語"},  # characters, not bytes
        {"_metrics": {"flag.processing.error": True}},  # kept, the size added after it
        {"_metrics": None},
        {"_metrics": {"bytes.stored.event": 1}, "after": "x"},  # measured with the old one
        {"_metrics": {}, "after": 1.5},
    ],
)
def test_bytes_stored_event_counts_characters_before_itself(data: dict[str, Any]) -> None:
    made = job(data, pulled=False)
    measured = copy.deepcopy(made.data)
    measured["_metrics"] = measured.get("_metrics") or {}  # what Sentry measures
    apply_event_metrics([made])
    event_metrics = made.data["_metrics"]
    assert event_metrics["bytes.stored.event"] == len(orjson.dumps(measured).decode())
    assert made.event_metrics is event_metrics
    # and the stored document is exactly the event, whichever way it was encoded
    encode_nodes([made], 1717236000.123456, Compression())
    assert made.nodes is not None
    stored = decode_blob(made.nodes[0][1])[0]
    assert stored == made.data
    assert list(stored) == list(made.data)
    assert stored["nodestore_insert"] == 1717236000.123456
    assert list(stored)[-1] == "nodestore_insert"


def test_processing_flags_are_counted() -> None:
    before = {
        flag: metrics.total(metrics.EVENT_PROCESSING_FLAGS, flag=flag)
        for flag in ("flag.processing.error", "flag.processing.fatal")
    }
    made = [
        job({"_metrics": {"flag.processing.error": True}}),
        job({"_metrics": {"flag.processing.error": True, "flag.processing.fatal": 1}}),
        job({"_metrics": {"flag.processing.fatal": False}}),
    ]
    apply_event_metrics(made)
    assert (
        metrics.total(metrics.EVENT_PROCESSING_FLAGS, flag="flag.processing.error")
        == before["flag.processing.error"] + 2
    )
    assert (
        metrics.total(metrics.EVENT_PROCESSING_FLAGS, flag="flag.processing.fatal")
        == before["flag.processing.fatal"] + 1
    )


@pytest.mark.parametrize(
    ("data", "tags"),
    [
        ({"level": "error"}, [["level", "error"]]),
        ({"level": None, "tags": [["level", "x"]]}, []),  # None only removes
        ({"level": "info", "logger": "payments"}, [["level", "info"], ["logger", "payments"]]),
        ({"level": "info", "logger": ""}, [["level", "info"]]),
        (
            {"level": "info", "environment": "prod", "transaction": "GET /"},
            [["level", "info"], ["environment", "prod"], ["transaction", "GET /"]],
        ),
        ({"tags": None}, []),
        (
            {"tags": [["a", "1"], ["level", "old"]], "level": "fatal"},
            [["a", "1"], ["level", "fatal"]],
        ),
    ],
)
def test_pull_out_tags(data: dict[str, Any], tags: list[list[str]]) -> None:
    made = job(data, pulled=False)
    pull_out(made)
    assert made.data["tags"] == tags
    assert made.data["project"] == made.project_id


def test_pull_out_runs_once() -> None:
    made = job({"level": "info", "environment": "prod", "tags": [["a", "1"]]}, pulled=False)
    pull_out(made)
    once = [list(pair) for pair in made.data["tags"]]
    pull_out(made)  # a retried batch: setting the tags again would move `level` to the end
    assert made.data["tags"] == once == [["a", "1"], ["level", "info"], ["environment", "prod"]]
