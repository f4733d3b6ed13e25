"""Groups on the real PostgreSQL (reference sentry-issue-platform.md §1.4-§1.5, CONTRACT §6,
§9.7): a few hundred fingerprints over projects, environments and releases, saved in batches,
then partly replayed, checked group by group against counts computed from what was sent; a
regression with its activity and history; two processes racing on the same new fingerprints."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from typing import Any

import orjson
import psycopg
from prometheus_client import REGISTRY

from consumer import metrics
from consumer.pipeline.groups import fold, group_data, hash_fingerprint
from consumer.settings import load_settings
from consumer.storage.models import (
    EnvironmentRequest,
    GroupValues,
    IssueOccurrence,
    ReleaseRequest,
)
from consumer.storage.store import Storage
from tests.integration.conftest import REDIS_URL
from tests.integration.helpers import make_project
from tests.integration.storage.conftest import StatementCounter

BASE = datetime(2024, 7, 1, tzinfo=UTC)
STATEMENTS_PER_BATCH = 16  # group_rows.py's numbered list


@dataclass(frozen=True)
class Sent:
    """One occurrence as the test sent it (plain data, picklable)."""

    project_id: int
    organization_id: int
    occurrence_id: str
    fingerprint: str
    seconds: int
    release_id: int | None
    release_version: str | None
    environment_id: int | None
    environment_name: str


def occurrence(sent: Sent) -> IssueOccurrence:
    when = BASE + timedelta(seconds=sent.seconds)
    title = f"Title of {sent.fingerprint}"
    return IssueOccurrence(
        project_id=sent.project_id,
        organization_id=sent.organization_id,
        occurrence_id=sent.occurrence_id,
        event_id=uuid.uuid5(uuid.NAMESPACE_OID, sent.occurrence_id).hex,
        hashes=hash_fingerprint([sent.fingerprint]),
        datetime=when,
        values=GroupValues(
            level=40,
            message=title,
            culprit="app.views",
            platform="python",
            type=1001,
            priority=25,
            data=group_data({"title": title}, title, "sub", "app.views", 25, when),
        ),
        release_id=sent.release_id,
        release_version=sent.release_version,
        environment_id=sent.environment_id,
        environment_name=sent.environment_name,
    )


def _groups_metric(outcome: metrics.GroupOutcome) -> float:
    value = REGISTRY.get_sample_value("consumer_groups_total", {"outcome": outcome})
    return value or 0.0


def save_in_batches(storage: Storage, sent: Sequence[Sent], size: int) -> None:
    for start in range(0, len(sent), size):
        storage.save_groups([occurrence(s) for s in sent[start : start + size]], fold)


def make_stream(
    storage: Storage, org_id: int, projects: Sequence[int], fingerprints: int, count: int
) -> list[Sent]:
    """`count` occurrences over `fingerprints` fingerprints (each of one project), three
    environments (one of them "") and three releases or none, in random order and times."""
    rng = random.Random(20)
    envs = storage.environments(
        [EnvironmentRequest(org_id, p, name, BASE) for p in projects for name in ("", "a", "b")]
    )
    releases = storage.releases(
        [ReleaseRequest(org_id, p, None, f"app@{i}", BASE) for p in projects for i in range(3)]
    )
    sent = []
    for index in range(count):
        fp_index = index % fingerprints if index < fingerprints else rng.randrange(fingerprints)
        project = projects[fp_index % len(projects)]
        env_name = rng.choice(("", "a", "b"))
        version = rng.choice((None, "app@0", "app@1", "app@2"))
        release = releases[(project, version)] if version else None
        sent.append(
            Sent(
                project,
                org_id,
                uuid.UUID(int=rng.getrandbits(128)).hex,
                f"fp-{project}-{fp_index}",
                rng.randrange(86_400),
                release.id if release else None,
                version,
                envs[(org_id, env_name)].id,
                env_name,
            )
        )
    return sent


def check_groups(db: psycopg.Connection[Any], sent: Sequence[Sent]) -> None:
    """Every group against what was sent, each distinct occurrence counted once."""
    unique = {s.occurrence_id: s for s in sent}.values()
    by_fp: dict[tuple[int, str], list[Sent]] = defaultdict(list)
    for s in unique:
        by_fp[(s.project_id, hash_fingerprint([s.fingerprint])[0])].append(s)
    projects = sorted({s.project_id for s in unique})
    rows = db.execute(
        """SELECT h.project_id, h.hash, g.id, g.times_seen, g.first_seen, g.last_seen, g.short_id,
                  g.first_release_id, g.status, g.substatus, g.level, g.type, g.priority, g.data
           FROM sentry_grouphash h JOIN sentry_groupedmessage g ON g.id = h.group_id
           WHERE h.project_id = ANY(%s)""",
        (projects,),
    ).fetchall()
    assert len(rows) == len(by_fp), "one hash row, and one group, per fingerprint"
    assert len({row[2] for row in rows}) == len(by_fp)
    group_of = {}
    for project_id, hash_, group_id, times_seen, first, last, *rest in rows:
        expected = by_fp[(project_id, hash_)]
        group_of[(project_id, hash_)] = group_id
        assert times_seen == len(expected), (project_id, hash_)
        assert first == BASE + timedelta(seconds=min(s.seconds for s in expected))
        assert last == BASE + timedelta(seconds=max(s.seconds for s in expected))
        _short_id, _first_release, status, substatus, level, type_, priority, data = rest
        assert (status, substatus, level, type_, priority) == (0, 3, 40, 1001, 25)
        assert orjson.loads(data)["metadata"]["value"] == "sub"
    for project_id in projects:
        short_ids = sorted(row[6] for row in rows if row[0] == project_id)
        assert short_ids == list(range(1, len(short_ids) + 1)), "dense and unique per project"
    (counter_ok,) = db.execute(
        """SELECT bool_and(c.value = (SELECT max(short_id) FROM sentry_groupedmessage g
                                      WHERE g.project_id = c.project_id))
           FROM sentry_projectcounter c WHERE c.project_id = ANY(%s)""",
        (projects,),
    ).fetchone() or (None,)
    assert counter_ok is True

    expected_envs = {
        (group_of[(s.project_id, hash_fingerprint([s.fingerprint])[0])], s.environment_id)
        for s in unique
        if s.environment_id is not None
    }
    found_envs = set(
        db.execute(
            "SELECT group_id, environment_id FROM sentry_groupenvironment WHERE group_id = ANY(%s)",
            (list(group_of.values()),),
        ).fetchall()
    )
    assert found_envs == expected_envs
    expected_releases: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    for s in unique:
        if s.release_id is not None:
            group_id = group_of[(s.project_id, hash_fingerprint([s.fingerprint])[0])]
            expected_releases[(group_id, s.release_id, s.environment_name)].append(s.seconds)
    found_releases = {
        (g, r, e): (first, last)
        for g, r, e, first, last in db.execute(
            """SELECT group_id, release_id, environment, first_seen, last_seen
               FROM sentry_grouprelease WHERE group_id = ANY(%s)""",
            (list(group_of.values()),),
        ).fetchall()
    }
    assert set(found_releases) == set(expected_releases)
    for key, seconds in expected_releases.items():
        assert found_releases[key] == (
            BASE + timedelta(seconds=min(seconds)),
            BASE + timedelta(seconds=max(seconds)),
        )
    # Release counters move once per new group and per new group environment with a release.
    (groups_with_release,) = db.execute(
        """SELECT count(*) FROM sentry_groupedmessage
           WHERE project_id = ANY(%s) AND first_release_id IS NOT NULL""",
        (projects,),
    ).fetchone() or (0,)
    (new_groups,) = db.execute(
        "SELECT coalesce(sum(new_groups), 0) FROM sentry_release_project WHERE project_id = ANY(%s)",
        (projects,),
    ).fetchone() or (0,)
    assert new_groups == groups_with_release
    (environments_with_release,) = db.execute(
        """SELECT count(*) FROM sentry_groupenvironment
           WHERE group_id = ANY(%s) AND first_release_id IS NOT NULL""",
        (list(group_of.values()),),
    ).fetchone() or (0,)
    (new_issues,) = db.execute(
        """SELECT coalesce(sum(new_issues_count), 0) FROM sentry_releaseprojectenvironment
           WHERE project_id = ANY(%s)""",
        (projects,),
    ).fetchone() or (0,)
    assert new_issues == environments_with_release


def test_groups_match_what_was_sent_after_a_replay(
    storage: Storage, statements: StatementCounter, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, p1 = make_project(db, unique)
    _, p2 = make_project(db, f"{unique}b", org_slug=f"org-{unique}")
    sent = make_stream(storage, org_id, [p1, p2], fingerprints=300, count=1500)
    created_before = _groups_metric("created")

    with statements.measure() as queries:
        storage.save_groups([occurrence(s) for s in sent[:200]], fold)
    assert 0 < len(queries) <= STATEMENTS_PER_BATCH + 2  # + BEGIN and COMMIT
    save_in_batches(storage, sent[200:], 200)
    check_groups(db, sent)
    assert _groups_metric("created") - created_before == 300
    updated_before = _groups_metric("updated")

    # A replay of part of the topic, in other batch boundaries, and duplicates in one batch.
    save_in_batches(storage, sent[500:900], 150)
    storage.save_groups([occurrence(s) for s in sent[10:20] + sent[10:20]], fold)
    check_groups(db, sent)
    assert _groups_metric("updated") == updated_before, "a replay updates no group"
    (activities,) = db.execute(
        "SELECT count(*) FROM sentry_activity WHERE project_id = ANY(%s)", ([p1, p2],)
    ).fetchone() or (0,)
    assert activities == 0


def test_a_resolved_group_regresses_once(
    storage: Storage, db: psycopg.Connection[Any], unique: str
) -> None:
    """Reference §1.4.8 `_handle_regression` (event_manager.py:2043-2182): status 0,
    substatus 6, Activity SET_REGRESSION, GroupHistory REGRESSED after the RESOLVED row."""
    org_id, project = make_project(db, unique)
    first = Sent(project, org_id, uuid.uuid4().hex, "fp", 0, None, None, None, "")
    storage.save_groups([occurrence(first)], fold)
    (group_id,) = db.execute(
        "SELECT id FROM sentry_groupedmessage WHERE project_id = %s", (project,)
    ).fetchone() or (0,)
    db.execute(
        "UPDATE sentry_groupedmessage SET status = 1, substatus = NULL WHERE id = %s", (group_id,)
    )
    (resolved_row,) = db.execute(
        """INSERT INTO sentry_grouphistory (organization_id, group_id, project_id, status,
                                            date_added)
           VALUES (%s, %s, %s, 1, now()) RETURNING id""",
        (org_id, group_id, project),
    ).fetchone() or (0,)

    later = Sent(project, org_id, uuid.uuid4().hex, "fp", 3600, None, None, None, "")
    regressed_before = _groups_metric("regressed")
    infos = storage.save_groups([occurrence(later)], fold)
    assert infos[(project, later.occurrence_id)].is_regression
    storage.save_groups([occurrence(later)], fold)  # a replay regresses nothing again
    assert _groups_metric("regressed") - regressed_before == 1

    status = db.execute(
        "SELECT status, substatus, times_seen, active_at, last_seen FROM sentry_groupedmessage "
        "WHERE id = %s",
        (group_id,),
    ).fetchone()
    regressed_at = BASE + timedelta(seconds=3600)
    assert status == (0, 6, 2, regressed_at, regressed_at)
    activities = db.execute(
        "SELECT type, data, user_id FROM sentry_activity WHERE group_id = %s", (group_id,)
    ).fetchall()
    assert [(t, orjson.loads(d), u) for t, d, u in activities] == [
        (6, {"event_id": occurrence(later).event_id, "version": ""}, None)
    ]
    history = db.execute(
        "SELECT status, prev_history_id, release_id FROM sentry_grouphistory "
        "WHERE group_id = %s AND id <> %s",
        (group_id, resolved_row),
    ).fetchall()
    assert history == [(7, resolved_row, None)]


def race(
    database_url: str,
    prefix: str,
    sent: Sequence[Sent],
    barrier: Barrier,
    results: Any,
) -> None:
    """One worker process: save its occurrences in batches of 50 once both are ready."""
    settings = load_settings(
        environ={"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL},
        overrides={"redis": {"key_prefix": prefix}},
        config_file=os.devnull,
    )
    storage = Storage.open(settings)
    try:
        barrier.wait(timeout=60)
        new = 0
        for start in range(0, len(sent), 50):
            infos = storage.save_groups([occurrence(s) for s in sent[start : start + 50]], fold)
            new += sum(info.is_new for info in infos.values())
        results.put(new)
    finally:
        storage.close()


def test_two_workers_racing_on_new_fingerprints_create_one_group_each(
    database_url: str, db: psycopg.Connection[Any], unique: str
) -> None:
    org_id, project = make_project(db, unique)
    rng = random.Random(5)
    shared = [
        Sent(
            project,
            org_id,
            uuid.UUID(int=rng.getrandbits(128)).hex,
            f"race-{i}",
            i,
            None,
            None,
            None,
            "",
        )
        for i in range(300)
    ]
    own = [
        [
            Sent(
                project,
                org_id,
                uuid.UUID(int=rng.getrandbits(128)).hex,
                f"race-{i}",
                1000 + i,
                None,
                None,
                None,
                "",
            )
            for i in range(300)
        ]
        for _ in range(2)
    ]
    # Both send the shared occurrences (a redelivery after a rebalance) and their own, over the
    # fingerprints in the same order, so that their batches meet on the same new hashes.
    streams = [shared + own[0], own[1] + shared]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(
            target=race, args=(database_url, f"test:{unique}:{n}:", stream, barrier, results)
        )
        for n, stream in enumerate(streams)
    ]
    for process in processes:
        process.start()
    created = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert sum(created) == 300, "each group reported new by exactly one worker"
    check_groups(db, shared + own[0] + own[1])


def test_a_nul_character_in_the_title_or_culprit_does_not_fail_the_batch(
    storage: Storage, db: psycopg.Connection[Any], unique: str
) -> None:
    """PostgreSQL's text holds no NUL: the group's message and culprit lose it (its JSON `data`
    keeps it escaped), and the batch is saved, created and updated alike."""
    org_id, project = make_project(db, unique)
    sent = Sent(project, org_id, uuid.uuid4().hex, "fp-nul", 0, None, None, None, "")
    base = occurrence(sent)
    nul = dataclasses.replace(
        base,
        values=dataclasses.replace(base.values, message="bad\x00title", culprit="app\x00view"),
    )
    storage.save_groups([nul], fold)
    again = Sent(project, org_id, uuid.uuid4().hex, "fp-nul", 60, None, None, None, "")
    storage.save_groups([dataclasses.replace(occurrence(again), values=nul.values)], fold)
    row = db.execute(
        "SELECT message, view, times_seen FROM sentry_groupedmessage WHERE project_id = %s",
        (project,),
    ).fetchone()
    assert row == ("badtitle", "appview", 2)
