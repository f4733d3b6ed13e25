"""Groups, set-based per batch (reference sentry-issue-platform.md §1.4-§1.6): find or create
the group of every occurrence, count what was not counted before, regress resolved groups, and
write the group-environment, group-release and release counter rows. One transaction, a bounded
number of statements whatever the batch size.

Order of the statements, and of the rows inside each (sorted), is fixed so that concurrent
workers lock rows in one global order:

    1  sentry_grouphash        look up every hash of every occurrence
    2  sentry_grouphash        INSERT the primary hashes still unknown, group NULL (won rows
                               are ours; a concurrent worker's insert makes us wait, then lose)
    3  sentry_projectcounter   one upsert per project: a range of short ids for the won hashes
    4  sentry_groupedmessage   INSERT the new groups (from their first occurrence)
    5  sentry_grouphash        point the won hashes at their groups
    6  sentry_grouphash        read back the lost hashes (the winner has committed by now)
    7  consumer_countedoccurrence  claim the occurrences; only those claimed now are counted
    8  sentry_groupedmessage   read the counted groups FOR UPDATE
    9  sentry_groupedmessage   write the folded changes
    10 sentry_activity, 11 sentry_grouphistory   regressions
    12 sentry_grouphash        link the occurrences' other hashes to their group, when free
    13 sentry_groupenvironment  get-or-create; the rows created are new group environments
    14 sentry_grouprelease      upsert: first_seen the earliest, last_seen the latest event
                               time (Sentry keeps the first processed and moves last_seen
                               after 60 s; these are the same whatever the order or replays)
    15 sentry_release_project   new_groups += new groups of the release
    16 sentry_releaseprojectenvironment  new_issues_count += new group environments

Every counter moves only with a row created or claimed in the same transaction, so a
replayed occurrence counts nothing twice (CONTRACT §9.7). A hash row whose group is NULL
(written by something else) is treated as unknown by the newer Sentry rule (reference §7): the
occurrence is left without a group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import Connection

from consumer.storage.models import (
    Fold,
    GroupChange,
    GroupInfo,
    GroupRow,
    IssueOccurrence,
)
from consumer.storage.models import (
    OccurrenceKey as Key,
)

ONGOING = 3  # the substatus Group's pre_save receiver gives a new unresolved group
ACTIVITY_SET_REGRESSION = 6
HISTORY_REGRESSED = 7
REGRESSION_PREVIOUS_STATUSES = [1, 11, 12, 13, 2]


@dataclass
class Written:
    """What a call wrote, for the metrics: rows per table; `groups_updated` counts the groups
    that existed before the call and counted occurrences in it."""

    groups_created: int = 0
    groups_updated: int = 0
    regressions: int = 0
    hashes: int = 0
    group_environments: int = 0
    group_releases: int = 0


def _text(value: str | None) -> str | None:
    """A string for a text column: PostgreSQL's text holds no NUL character, which a title or
    culprit may carry (in JSON, `data`, it is escaped and kept)."""
    return value.replace("\x00", "") if value and "\x00" in value else value


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


_LOOKUP = """
SELECT h.project_id, h.hash, h.group_id
FROM sentry_grouphash h
JOIN unnest(%s::bigint[], %s::text[]) AS t(project_id, hash)
  ON h.project_id = t.project_id AND h.hash = t.hash
"""

_INSERT_HASHES = """
INSERT INTO sentry_grouphash (project_id, hash)
SELECT project_id, hash FROM unnest(%s::bigint[], %s::text[]) AS t(project_id, hash)
ORDER BY project_id, hash
ON CONFLICT (project_id, hash) DO NOTHING
RETURNING project_id, hash
"""

_COUNTERS = """
INSERT INTO sentry_projectcounter (project_id, value)
SELECT project_id, n FROM unnest(%s::bigint[], %s::bigint[]) AS t(project_id, n)
ORDER BY project_id
ON CONFLICT (project_id) DO UPDATE SET value = sentry_projectcounter.value + EXCLUDED.value
RETURNING project_id, value
"""

_INSERT_GROUPS = """
INSERT INTO sentry_groupedmessage (
    project_id, logger, level, message, view, num_comments, platform, status, substatus,
    times_seen, last_seen, first_seen, first_release_id, resolved_at, active_at,
    time_spent_total, time_spent_count, score, is_public, data, short_id, type, priority,
    priority_locked_at)
SELECT project_id, '', level, message, view, 0, platform, 0, %(ongoing)s,
       1, seen, seen, first_release_id, NULL, seen, 0, 0, score, false, data, short_id, type,
       priority, NULL
FROM unnest(%(project)s::bigint[], %(level)s::int[], %(message)s::text[], %(view)s::text[],
            %(platform)s::text[], %(seen)s::timestamptz[], %(release)s::bigint[],
            %(score)s::int[], %(data)s::text[], %(short_id)s::bigint[], %(type)s::int[],
            %(priority)s::int[])
     AS t(project_id, level, message, view, platform, seen, first_release_id, score, data,
          short_id, type, priority)
ORDER BY project_id, short_id
RETURNING id, project_id, short_id
"""

_POINT_HASHES = """
UPDATE sentry_grouphash h SET group_id = t.group_id
FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS t(project_id, hash, group_id)
WHERE h.project_id = t.project_id AND h.hash = t.hash
"""

_CLAIM = """
INSERT INTO consumer_countedoccurrence (project_id, occurrence_id, group_id)
SELECT project_id, occurrence_id, group_id
FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS t(project_id, occurrence_id, group_id)
ORDER BY project_id, occurrence_id
ON CONFLICT (project_id, occurrence_id) DO NOTHING
RETURNING project_id, occurrence_id
"""

_READ_GROUPS = """
SELECT id, project_id, status, substatus, level, message, view, first_seen, last_seen,
       active_at, times_seen, data
FROM sentry_groupedmessage WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE
"""

_UPDATE_GROUPS = """
UPDATE sentry_groupedmessage g SET
    status = t.status, substatus = t.substatus, level = t.level, message = t.message,
    view = t.view, first_seen = t.first_seen, last_seen = t.last_seen, active_at = t.active_at,
    times_seen = t.times_seen, score = t.score, data = t.data
FROM unnest(%(id)s::bigint[], %(status)s::int[], %(substatus)s::int[], %(level)s::int[],
            %(message)s::text[], %(view)s::text[], %(first_seen)s::timestamptz[],
            %(last_seen)s::timestamptz[], %(active_at)s::timestamptz[], %(times_seen)s::int[],
            %(score)s::int[], %(data)s::text[])
     AS t(id, status, substatus, level, message, view, first_seen, last_seen, active_at,
          times_seen, score, data)
WHERE g.id = t.id
"""

_ACTIVITY = """
INSERT INTO sentry_activity (project_id, group_id, type, ident, user_id, datetime, data)
SELECT project_id, group_id, %s, NULL, NULL, now(), data
FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS t(project_id, group_id, data)
"""

_HISTORY = """
INSERT INTO sentry_grouphistory (
    organization_id, group_id, project_id, release_id, user_id, team_id, status,
    prev_history_id, prev_history_date, date_added)
SELECT t.organization_id, t.group_id, t.project_id, t.release_id, NULL, NULL, %(status)s,
       prev.id, prev.date_added, now()
FROM unnest(%(org)s::bigint[], %(group)s::bigint[], %(project)s::bigint[],
            %(release)s::bigint[]) AS t(organization_id, group_id, project_id, release_id)
LEFT JOIN LATERAL (
    SELECT id, date_added FROM sentry_grouphistory h
    WHERE h.group_id = t.group_id AND h.status = ANY(%(previous)s::int[])
    ORDER BY date_added DESC LIMIT 1
) prev ON true
"""

_LINK_HASHES = """
INSERT INTO sentry_grouphash (project_id, hash, group_id)
SELECT project_id, hash, group_id
FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS t(project_id, hash, group_id)
ORDER BY project_id, hash
ON CONFLICT (project_id, hash) DO NOTHING
"""

_GROUP_ENVIRONMENTS = """
INSERT INTO sentry_groupenvironment (group_id, environment_id, first_release_id, first_seen)
SELECT group_id, environment_id, first_release_id, now()
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[])
     AS t(group_id, environment_id, first_release_id)
ORDER BY group_id, environment_id
ON CONFLICT (group_id, environment_id) DO NOTHING
RETURNING group_id, environment_id
"""

_GROUP_RELEASES = """
INSERT INTO sentry_grouprelease (project_id, group_id, release_id, environment, first_seen,
                                 last_seen)
SELECT project_id, group_id, release_id, environment, first_seen, last_seen
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::timestamptz[],
            %s::timestamptz[])
     AS t(project_id, group_id, release_id, environment, first_seen, last_seen)
ORDER BY group_id, release_id, environment
ON CONFLICT (group_id, release_id, environment) DO UPDATE
SET first_seen = LEAST(sentry_grouprelease.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(sentry_grouprelease.last_seen, EXCLUDED.last_seen)
"""

_RELEASE_NEW_GROUPS = """
UPDATE sentry_release_project rp SET new_groups = COALESCE(rp.new_groups, 0) + t.n
FROM (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) AS u(release_id, project_id, n)
      ORDER BY project_id, release_id) t
WHERE rp.release_id = t.release_id AND rp.project_id = t.project_id
"""

_RELEASE_ENVIRONMENT_ISSUES = """
INSERT INTO sentry_releaseprojectenvironment (
    release_id, project_id, environment_id, new_issues_count, first_seen, last_seen)
SELECT release_id, project_id, environment_id, n, now(), now()
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::int[])
     AS t(release_id, project_id, environment_id, n)
ORDER BY project_id, release_id, environment_id
ON CONFLICT (project_id, release_id, environment_id) DO UPDATE
SET new_issues_count = sentry_releaseprojectenvironment.new_issues_count
                       + EXCLUDED.new_issues_count
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]


def save(
    conn: Connection[Any], occurrences: Sequence[IssueOccurrence], fold: Fold
) -> tuple[dict[Key, GroupInfo], Written]:
    """Group `occurrences` (batch order = offset order) inside the caller's transaction.

    `fold(row, counted)` computes a group's change from the occurrences counted now (a new
    group is folded from `times_seen` 0, its own first occurrence included). Returns, per (project,
    occurrence id), its GroupInfo (absent: no group, see the module docstring)."""
    written = Written()
    # 1. Every hash of every occurrence.
    wanted_hashes = sorted({(o.project_id, h) for o in occurrences for h in o.hashes})
    linked: dict[tuple[int, str], int | None] = {}
    project_col, hash_col = _columns(wanted_hashes, 2)
    for project_id, hash_, group_id in conn.execute(_LOOKUP, (project_col, hash_col)):
        linked[(project_id, hash_)] = group_id

    group_of: dict[Key, int] = {}
    creators: dict[tuple[int, str], IssueOccurrence] = {}  # primary hash → first occurrence
    for occurrence in occurrences:
        key = (occurrence.project_id, occurrence.occurrence_id)
        found = next(
            (
                linked[(occurrence.project_id, h)]
                for h in occurrence.hashes
                if linked.get((occurrence.project_id, h)) is not None
            ),
            None,
        )
        if found is not None:
            group_of[key] = found
        elif (occurrence.project_id, occurrence.hashes[0]) not in linked:
            creators.setdefault((occurrence.project_id, occurrence.hashes[0]), occurrence)

    # 2. Claim the unknown primary hashes; the ones inserted now are ours to create.
    new_keys = sorted(creators)
    won: set[tuple[int, str]] = set()
    if new_keys:
        project_col, hash_col = _columns(new_keys, 2)
        won = {(row[0], row[1]) for row in conn.execute(_INSERT_HASHES, (project_col, hash_col))}
    created: dict[tuple[int, str], int] = {}  # primary hash → new group id
    if won:
        # 3. Short ids: one range per project, in hash order within it.
        per_project: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for key in sorted(won):
            per_project[key[0]].append(key)
        projects = sorted(per_project)
        last = dict(
            conn.execute(_COUNTERS, (projects, [len(per_project[p]) for p in projects])).fetchall()
        )
        short_ids: dict[tuple[int, str], int] = {}
        for project_id, keys in per_project.items():
            first = last[project_id] - len(keys) + 1
            for offset, key in enumerate(keys):
                short_ids[key] = first + offset
        # 4. The new groups, each from its first occurrence.
        rows = sorted(won, key=lambda k: (k[0], short_ids[k]))
        creating = [creators[key] for key in rows]
        params = {
            "ongoing": ONGOING,
            "project": [o.project_id for o in creating],
            "level": [o.values.level for o in creating],
            "message": [_text(o.values.message) for o in creating],
            "view": [_text(o.values.culprit) for o in creating],
            "platform": [o.values.platform for o in creating],
            "seen": [o.datetime for o in creating],
            "release": [o.release_id for o in creating],
            "score": [int(o.datetime.timestamp()) for o in creating],  # ln(1) * 600 + epoch
            "data": [_dumps(o.values.data) for o in creating],
            "short_id": [short_ids[key] for key in rows],
            "type": [o.values.type for o in creating],
            "priority": [o.values.priority for o in creating],
        }
        by_short_id = {
            (project_id, short_id): group_id
            for group_id, project_id, short_id in conn.execute(_INSERT_GROUPS, params)
        }
        created = {key: by_short_id[(key[0], short_ids[key])] for key in rows}
        written.groups_created = len(created)
        # 5. Point the won hashes at their groups.
        conn.execute(
            _POINT_HASHES,
            ([k[0] for k in rows], [k[1] for k in rows], [created[k] for k in rows]),
        )
    lost = [key for key in new_keys if key not in won]
    if lost:
        # 6. A concurrent worker created these; it has committed (our insert waited for it).
        project_col, hash_col = _columns(lost, 2)
        for project_id, hash_, group_id in conn.execute(_LOOKUP, (project_col, hash_col)):
            linked[(project_id, hash_)] = group_id
    new_group_ids = set(created.values())
    creator_keys = {(o.project_id, o.occurrence_id) for o in (creators[k] for k in created)}
    for occurrence in occurrences:
        key = (occurrence.project_id, occurrence.occurrence_id)
        if key in group_of:
            continue
        primary = (occurrence.project_id, occurrence.hashes[0])
        group_id = created.get(primary) or linked.get(primary)
        if group_id is not None:
            group_of[key] = group_id

    # 7. Claim the occurrences: the rows inserted now are counted, the others were already.
    claims = sorted(group_of)
    counted: set[Key] = set()
    if claims:
        counted = {
            (row[0], row[1])
            for row in conn.execute(
                _CLAIM,
                ([k[0] for k in claims], [k[1] for k in claims], [group_of[k] for k in claims]),
            )
        }

    # 8-9. Fold the counted occurrences into their groups.
    counted_by_group: dict[int, list[IssueOccurrence]] = defaultdict(list)
    seen_now: set[Key] = set()
    for occurrence in occurrences:
        key = (occurrence.project_id, occurrence.occurrence_id)
        if key in counted and key not in seen_now:
            seen_now.add(key)
            counted_by_group[group_of[key]].append(occurrence)
    changes: list[GroupChange] = []
    if counted_by_group:
        for row in conn.execute(_READ_GROUPS, (sorted(counted_by_group),)).fetchall():
            group = GroupRow(
                id=row[0],
                project_id=row[1],
                status=row[2],
                substatus=row[3],
                level=row[4],
                message=row[5],
                culprit=row[6],
                first_seen=row[7],
                last_seen=row[8],
                active_at=row[9],
                times_seen=0 if row[0] in new_group_ids else row[10],
                data=orjson.loads(row[11]) if row[11] else {},
            )
            changes.append(fold(group, counted_by_group[group.id]))
    if changes:
        conn.execute(
            _UPDATE_GROUPS,
            {
                "id": [c.id for c in changes],
                "status": [c.status for c in changes],
                "substatus": [c.substatus for c in changes],
                "level": [c.level for c in changes],
                "message": [_text(c.message) for c in changes],
                "view": [_text(c.culprit) for c in changes],
                "first_seen": [c.first_seen for c in changes],
                "last_seen": [c.last_seen for c in changes],
                "active_at": [c.active_at for c in changes],
                "times_seen": [max(c.times_seen, 1) for c in changes],
                "score": [c.score for c in changes],
                "data": [_dumps(c.data) for c in changes],
            },
        )
        written.groups_updated = sum(1 for c in changes if c.id not in new_group_ids)
    regressed = [c for c in changes if c.regression is not None]
    if regressed:
        # 10-11. Activity SET_REGRESSION and GroupHistory REGRESSED (reference §1.4.8 steps 4-5).
        project_by_group = {group_of[k]: k[0] for k in group_of}
        org_by_project = {o.project_id: o.organization_id for o in occurrences}
        activity_rows = []
        for change in regressed:
            regression = change.regression
            assert regression is not None
            activity_rows.append(
                (
                    project_by_group[change.id],
                    change.id,
                    _dumps(
                        {
                            "event_id": regression.event_id,
                            "version": regression.release_version or "",
                        }
                    ),
                )
            )
        conn.execute(_ACTIVITY, (ACTIVITY_SET_REGRESSION, *_columns(activity_rows, 3)))
        conn.execute(
            _HISTORY,
            {
                "status": HISTORY_REGRESSED,
                "org": [org_by_project[project_by_group[c.id]] for c in regressed],
                "group": [c.id for c in regressed],
                "project": [project_by_group[c.id] for c in regressed],
                "release": [c.regression.release_id if c.regression else None for c in regressed],
                "previous": REGRESSION_PREVIOUS_STATUSES,
            },
        )
        written.regressions = len(regressed)

    # 12. The other hashes, linked to the occurrence's group when no group has them.
    extra = sorted(
        {
            (o.project_id, h, group_of[(o.project_id, o.occurrence_id)])
            for o in occurrences
            if (o.project_id, o.occurrence_id) in group_of
            for h in o.hashes
            if (o.project_id, h) not in linked and (o.project_id, h) not in created
        }
    )
    if extra:
        written.hashes = max(conn.execute(_LINK_HASHES, _columns(extra, 3)).rowcount, 0)

    # 13. Group environments; the rows created now are new group environments.
    environments: dict[tuple[int, int], int | None] = {}
    for o in occurrences:
        key = (o.project_id, o.occurrence_id)
        if key in group_of and o.environment_id is not None:
            environments.setdefault((group_of[key], o.environment_id), o.release_id)
    new_environments: set[tuple[int, int]] = set()
    if environments:
        env_keys = sorted(environments)
        new_environments = {
            (row[0], row[1])
            for row in conn.execute(
                _GROUP_ENVIRONMENTS,
                (
                    [k[0] for k in env_keys],
                    [k[1] for k in env_keys],
                    [environments[k] for k in env_keys],
                ),
            )
        }
        written.group_environments = len(new_environments)
    created_environments = frozenset(new_environments)

    # 14. Group releases: first and last seen per (group, release, environment name).
    releases: dict[tuple[int, int, str], tuple[int, datetime, datetime]] = {}
    for o in occurrences:
        key = (o.project_id, o.occurrence_id)
        if key not in group_of or o.release_id is None:
            continue
        release_key = (group_of[key], o.release_id, o.environment_name)
        previous = releases.get(release_key)
        if previous is None:
            releases[release_key] = (o.project_id, o.datetime, o.datetime)
        else:
            releases[release_key] = (
                o.project_id,
                min(previous[1], o.datetime),
                max(previous[2], o.datetime),
            )
    if releases:
        release_keys = sorted(releases)
        conn.execute(
            _GROUP_RELEASES,
            (
                [releases[k][0] for k in release_keys],
                [k[0] for k in release_keys],
                [k[1] for k in release_keys],
                [k[2] for k in release_keys],
                [releases[k][1] for k in release_keys],
                [releases[k][2] for k in release_keys],
            ),
        )
        written.group_releases = len(releases)

    # 15-16. Release counters (reference §1.5 `_increment_release_associated_counts`).
    new_groups: dict[tuple[int, int], int] = defaultdict(int)
    new_issues: dict[tuple[int, int, int], int] = defaultdict(int)
    for primary in created:
        creator = creators[primary]
        if creator.release_id is not None:
            new_groups[(creator.release_id, creator.project_id)] += 1
    for o in occurrences:
        key = (o.project_id, o.occurrence_id)
        group_id_or_none = group_of.get(key)
        if group_id_or_none is None or o.release_id is None or o.environment_id is None:
            continue
        env_key = (group_id_or_none, o.environment_id)
        if env_key in new_environments and environments.get(env_key, -1) == o.release_id:
            new_environments.discard(env_key)  # counted once, with the release it was made for
            new_issues[(o.release_id, o.project_id, o.environment_id)] += 1
    if new_groups:
        release_projects = sorted(new_groups, key=lambda k: (k[1], k[0]))
        conn.execute(
            _RELEASE_NEW_GROUPS,
            (
                [k[0] for k in release_projects],
                [k[1] for k in release_projects],
                [new_groups[k] for k in release_projects],
            ),
        )
    if new_issues:
        issue_keys = sorted(new_issues, key=lambda k: (k[1], k[0], k[2]))
        conn.execute(
            _RELEASE_ENVIRONMENT_ISSUES,
            (
                [k[0] for k in issue_keys],
                [k[1] for k in issue_keys],
                [k[2] for k in issue_keys],
                [new_issues[k] for k in issue_keys],
            ),
        )

    # GroupInfo per occurrence: is_new for the first occurrence of a group created now,
    # is_regression for the occurrence that regressed it, is_new_group_environment for the
    # first occurrence of a (group, environment) pair created now.
    regressed_by = {(c.id, c.regression.event_id) for c in regressed if c.regression}
    result: dict[Key, GroupInfo] = {}
    announced: set[tuple[int, int]] = set()
    for o in occurrences:
        key = (o.project_id, o.occurrence_id)
        group_id = group_of.get(key)
        if group_id is None or key in result:
            continue
        env_key = (group_id, o.environment_id if o.environment_id is not None else -1)
        is_new_environment = env_key in created_environments and env_key not in announced
        announced.add(env_key)
        result[key] = GroupInfo(
            group_id=group_id,
            is_new=key in creator_keys,
            is_regression=(group_id, o.event_id) in regressed_by and key in counted,
            is_new_group_environment=is_new_environment,
            counted=key in counted,
        )
    return result, written
