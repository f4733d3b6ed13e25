"""Groups through the whole worker (CONTRACT §6, §9.7; reference sentry-issue-platform.md
§1.4-§1.5): occurrences over a few hundred fingerprints, two projects, environments and
releases go through Kafka; part of the topic is then sent again and the whole topic replayed
by a fresh consumer group. Every group is checked against what was sent: one per fingerprint,
times seen, first and last seen, short ids dense per project, environment and release rows."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from consumer.settings import Settings
from consumer.worker import run_worker
from tests.integration.helpers import make_project, produce_raw

pytestmark = pytest.mark.integration

FINGERPRINTS = 240
MESSAGES = 900
TOLERANCE = timedelta(milliseconds=1)


def _until_idle(settings: Settings, group_id: str | None = None) -> Settings:
    kafka = settings.kafka
    if group_id is not None:
        kafka = dataclasses.replace(kafka, group_id=group_id)
    return dataclasses.replace(
        settings,
        kafka=kafka,
        worker=dataclasses.replace(settings.worker, exit_when_idle=2.0, batch_size=100),
    )


def _messages(projects: Sequence[int]) -> list[dict[str, Any]]:
    rng = random.Random(42)
    now = datetime.now(UTC).replace(microsecond=0)
    sent = []
    for index in range(MESSAGES):
        fp = index if index < FINGERPRINTS else rng.randrange(FINGERPRINTS)
        project_id = projects[fp % len(projects)]
        when = now - timedelta(seconds=rng.randrange(3600))
        event_id = uuid.UUID(int=rng.getrandbits(128)).hex
        tags: list[list[str]] = []
        event: dict[str, Any] = {
            "event_id": event_id,
            "project_id": project_id,
            "platform": "python",
            "timestamp": when.timestamp(),
            "received": now.timestamp(),
            "tags": tags,
        }
        environment = rng.choice((None, "production", "staging"))
        if environment:
            event["environment"] = environment
        release = rng.choice((None, "app@1.0.0", "app@2.0.0"))
        if release:
            event["release"] = release
        sent.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "project_id": project_id,
                "event_id": event_id,
                "fingerprint": [f"fingerprint-{fp}"],
                "issue_title": f"Problem {fp}",
                "subtitle": "a subtitle",
                "resource_id": None,
                "evidence_data": {},
                "evidence_display": [],
                "type": 1001,
                "detection_time": when.timestamp(),
                "level": "warning",
                "culprit": "app.views.index",
                "payload_type": "occurrence",
                "event": event,
            }
        )
    return sent


def _check(db: psycopg.Connection[Any], sent: Sequence[dict[str, Any]]) -> None:
    by_fp: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for message in sent:
        digest = hashlib.md5(message["fingerprint"][0].encode()).hexdigest()
        by_fp[(message["project_id"], digest)].append(message)
    projects = sorted({m["project_id"] for m in sent})
    rows = db.execute(
        """SELECT h.project_id, h.hash, g.id, g.times_seen, g.first_seen, g.last_seen,
                  g.short_id, g.view, g.level, g.message
           FROM sentry_grouphash h JOIN sentry_groupedmessage g ON g.id = h.group_id
           WHERE h.project_id = ANY(%s)""",
        (projects,),
    ).fetchall()
    assert len(rows) == len(by_fp) == FINGERPRINTS
    groups = {}
    for project_id, digest, group_id, times_seen, first, last, _short, view, level, msg in rows:
        expected = by_fp[(project_id, digest)]
        groups[(project_id, digest)] = group_id
        assert times_seen == len(expected)
        times = [datetime.fromtimestamp(m["event"]["timestamp"], UTC) for m in expected]
        assert abs(first - min(times)) < TOLERANCE
        assert abs(last - max(times)) < TOLERANCE
        assert (view, level) == ("app.views.index", 30)
        assert (
            msg
            == f"Problem {expected[0]['fingerprint'][0].split('-')[1]} a subtitle app.views.index"
        )
    for project_id in projects:
        short_ids = sorted(row[6] for row in rows if row[0] == project_id)
        assert short_ids == list(range(1, len(short_ids) + 1))

    environments = set(
        db.execute(
            """SELECT ge.group_id, e.name FROM sentry_groupenvironment ge
               JOIN sentry_environment e ON e.id = ge.environment_id
               WHERE ge.group_id = ANY(%s)""",
            (list(groups.values()),),
        ).fetchall()
    )
    expected_environments = {
        (groups[key], m["event"].get("environment", "")) for key, ms in by_fp.items() for m in ms
    }
    assert environments == expected_environments
    releases = set(
        db.execute(
            """SELECT gr.group_id, r.version, gr.environment FROM sentry_grouprelease gr
               JOIN sentry_release r ON r.id = gr.release_id WHERE gr.group_id = ANY(%s)""",
            (list(groups.values()),),
        ).fetchall()
    )
    expected_releases = {
        (groups[key], m["event"]["release"], m["event"].get("environment", ""))
        for key, ms in by_fp.items()
        for m in ms
        if "release" in m["event"]
    }
    assert releases == expected_releases
    (counted,) = db.execute(
        "SELECT count(*) FROM consumer_countedoccurrence WHERE project_id = ANY(%s)", (projects,)
    ).fetchone() or (0,)
    assert counted == len(sent)


def test_groups_after_a_redelivery_and_a_replay(
    settings: Settings,
    db: psycopg.Connection[Any],
    create_topic: Callable[..., str],
    producer: Producer,
    unique: str,
) -> None:
    _, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
    topic = create_topic(settings.kafka.topic, 4)
    sent = _messages([p1, p2])
    values = [orjson.dumps(m) for m in sent]
    produce_raw(producer, topic, values)
    assert run_worker(_until_idle(settings), install_signals=False) == 0
    _check(db, sent)

    # The same messages again on the topic (a producer's retry), then the whole topic read
    # again by a new consumer group (a replay from the start).
    produce_raw(producer, topic, values[300:600])
    assert run_worker(_until_idle(settings), install_signals=False) == 0
    _check(db, sent)
    assert run_worker(_until_idle(settings, f"replay-{unique}"), install_signals=False) == 0
    _check(db, sent)
