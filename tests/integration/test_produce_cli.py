"""`consumer produce` against the real broker and database, then the real worker: every event
it produced is saved, and every bad message it produced is dead-lettered, none lost."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from consumer.errors import BadMessage
from consumer.kafka_admin import committed_offsets
from consumer.pipeline.job import Job
from consumer.pipeline.message import decode
from consumer.settings import Settings
from consumer.storage.nodestore import event_node_id
from consumer.strategy.dlq import HEADER_OFFSET, HEADER_PARTITION
from consumer.worker import run_worker
from tests.integration.helpers import end_offsets, read_topic

pytestmark = pytest.mark.integration


def _produce(settings: Settings, *args: str) -> str:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DATABASE_URL": settings.database.url.reveal(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "--config", os.devnull, "produce", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _kinds(output: str) -> dict[str, int]:
    """The per-kind counts of `consumer produce`'s summary line ("...: good 344, raw_file 8")."""
    summary = output.strip().splitlines()[-1].rsplit(": ", 1)[1]
    return {kind: int(n) for kind, n in (item.rsplit(" ", 1) for item in summary.split(", "))}


def _drain(settings: Settings) -> None:
    until_idle = dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, exit_when_idle=3.0)
    )
    assert run_worker(until_idle, install_signals=False) == 0


def _saved(db: psycopg.Connection[Any], keys: list[tuple[int, str]]) -> int:
    ids = [event_node_id(project_id, event_id) for project_id, event_id in keys]
    row = db.execute("SELECT count(*) FROM nodestore_node WHERE id = ANY(%s)", (ids,)).fetchone()
    assert row is not None
    return int(row[0])


def test_sdk_events_for_several_projects_are_all_saved(
    settings: Settings, db: psycopg.Connection[Any], create_topic: Callable[..., str]
) -> None:
    topic = create_topic(settings.kafka.topic, 3)
    out = _produce(
        settings, "--topic", topic, "--count", "1200", "--orgs", "2", "--create-projects", "3"
    )
    assert "(0 failed)" in out and _kinds(out) == {"good": 1200}, out

    messages = read_topic(settings, topic, 1200)
    assert len(messages) == 1200
    sent = [orjson.loads(message.value()) for message in messages]
    projects = db.execute(
        """SELECT p.slug, o.slug FROM sentry_project p
           JOIN sentry_organization o ON o.id = p.organization_id WHERE p.id = ANY(%s)""",
        (list({m["project_id"] for m in sent}),),
    ).fetchall()
    assert sorted(projects) == [
        ("loadgen-1", "loadgen-org-1"),
        ("loadgen-2", "loadgen-org-2"),
        ("loadgen-3", "loadgen-org-1"),
    ]
    assert len({m["event_id"] for m in sent}) == 1200, "event ids are not fresh"
    events = [m["event"] for m in sent]
    assert len({e.get("release") for e in events}) >= 3
    assert len({e.get("environment") for e in events}) >= 3
    assert len({e.get("user", {}).get("id") for e in events}) >= 50
    assert any(e.get("exception", {}).get("values") for e in events)
    assert len({e.get("request", {}).get("headers", {}).get("User-Agent") for e in events}) >= 5

    _drain(settings)

    assert _saved(db, [(m["project_id"], m["event_id"]) for m in sent]) == 1200
    assert committed_offsets(settings, topic, settings.kafka.group_id) == end_offsets(
        settings, topic
    )


def test_sample_files_with_bad_messages_none_lost(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    samples_dir: Path,
) -> None:
    """Sentry's sample files (two of them not JSON, sent raw) with a tenth of bad messages: every
    message is either saved or on the dead-letter topic, each where decoding says it belongs."""
    topic = create_topic(settings.kafka.topic, 2)
    dlq = create_topic(settings.kafka.dlq_topic, 1)
    out = _produce(
        settings,
        *("--topic", topic, "--count", "400", "--events", str(samples_dir)),
        *("--bad-ratio", "0.1", "--create-projects", "2", "--seed", "3"),
    )
    assert "(0 failed)" in out and "raw_file" in out, out

    _drain(settings)

    inputs = read_topic(settings, topic, 400)
    assert len(inputs) == 400
    letters = read_topic(settings, dlq, sum(end_offsets(settings, dlq).values()))
    dead = set()
    for letter in letters:
        headers = dict(letter.headers() or [])
        dead.add((int(headers[HEADER_PARTITION]), int(headers[HEADER_OFFSET])))
    known = {row[0] for row in db.execute("SELECT id FROM sentry_project").fetchall()}
    rejected = saved = refused_samples = 0
    for message in inputs:
        where = (message.partition(), message.offset())
        try:
            job = decode(message.value())
        except BadMessage as bad:
            rejected += 1
            # Two of the sample files are events Sentry's schemas refuse (samples.py).
            refused_samples += bad.reason == "invalid_event_payload"
            assert where in dead, f"bad message at {where} is not on the dead-letter topic"
            continue
        assert isinstance(job, Job), f"{where} decodes to {job}"
        if _saved(db, [(job.project_id, job.event_id)]) == 1:
            saved += 1
        else:
            # Unknown projects: dead-lettered once the pipeline checks projects, saved before.
            assert job.project_id not in known, f"event at {where} of a known project not saved"
            assert where in dead, f"event at {where} neither saved nor dead-lettered"
    kinds = _kinds(out)
    assert sum(kinds.values()) == 400
    assert kinds["raw_file"] >= 1 and kinds["good"] >= 300
    spoiled = sum(n for kind, n in kinds.items() if kind not in {"good", "raw_file"})
    assert 30 <= spoiled <= 40, kinds  # a tenth, less the slots that fell on raw files
    assert refused_samples >= 1
    assert rejected == 400 - kinds["good"] - kinds.get("unknown_project", 0) + refused_samples
    assert saved >= kinds["good"] - refused_samples
