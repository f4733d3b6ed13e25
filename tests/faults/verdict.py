"""The checks run after every scenario, and the table row they produce.

* every message meant to be saved is in `nodestore_node` (event and occurrence documents) with
  the right content, once; nothing else is there;
* the release, distribution, environment and link rows are exactly those the saved messages
  imply (`expect.py`), one row per name;
* every bad message is on the dead-letter topic, with its original bytes and key, origin headers
  naming it, and an acceptable reason; no other message is;
* skipped messages are neither saved nor dead-lettered;
* at every sampled moment, every message below the group's committed offset had been written
  (the commit time of the transaction that first wrote its nodestore rows), dead-lettered (the time
  the broker appended the dead letter) or was one to skip; finally the committed offsets are
  the end offsets.
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, TopicPartition

from consumer.storage.nodestore import decode_blob
from tests.faults.expect import FieldOracle, Rows, content_mismatches, expected_rows
from tests.faults.sampler import Sample
from tests.faults.traffic import Sent


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    at: float  # when the broker appended it (LogAppendTime), seconds


@dataclass
class Verdict:
    scenario: str
    sent: int = 0
    saved: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery: list[float] = field(default_factory=list)
    dead_letter_copies: int = 0  # dead letters beyond one per bad message (at least once)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

    @property
    def recovery_text(self) -> str:
        if not self.recovery:
            return "-"
        if len(self.recovery) == 1:
            return f"{self.recovery[0]:.1f}s"
        return f"max {max(self.recovery):.1f}s ({len(self.recovery)} faults)"


def read_dead_letters(bootstrap: str, topic: str, *, append_time: bool = False) -> list[DeadLetter]:
    """Every message on the dead-letter topic, from the start to the current end;
    `append_time`: insist that the topic stamps messages when the broker appends them."""
    client = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-dlq-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        metadata = client.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        ends = {}
        for partition in metadata.partitions:
            low, high = client.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                ends[partition] = high
        if not ends:
            return []
        client.assign([TopicPartition(topic, p, 0) for p in ends])
        letters: list[DeadLetter] = []
        positions = dict.fromkeys(ends, 0)
        while any(positions[p] < ends[p] for p in ends):
            message = client.poll(5.0)
            assert message is not None, f"dead-letter topic {topic}: read stalled at {positions}"
            if message.error():
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            positions[partition] = offset + 1
            raw_headers = message.headers() or []
            pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
            headers = {name: _text(value) for name, value in pairs}
            kind, stamp = message.timestamp()
            if append_time:
                assert kind == TIMESTAMP_LOG_APPEND_TIME, f"{topic} must use LogAppendTime"
            letters.append(DeadLetter(message.key(), message.value(), headers, stamp / 1000))
        return letters
    finally:
        client.close()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    client = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-ends", "log_level": 0})
    try:
        return {
            p: client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        client.close()


def read_rows(conn: psycopg.Connection[Any]) -> tuple[Rows, dict[str, int]]:
    """The rows of the five tables as names, and how many rows each table holds."""
    queries = {
        "sentry_release": "SELECT organization_id, version FROM sentry_release",
        "sentry_release_project": """SELECT rp.project_id, r.version FROM sentry_release_project rp
                                     JOIN sentry_release r ON r.id = rp.release_id""",
        "sentry_distribution": """SELECT d.organization_id, r.version, d.name
                                  FROM sentry_distribution d
                                  JOIN sentry_release r ON r.id = d.release_id""",
        "sentry_environment": "SELECT organization_id, name FROM sentry_environment",
        "sentry_environmentproject": """SELECT ep.project_id, e.name FROM sentry_environmentproject ep
                                        JOIN sentry_environment e ON e.id = ep.environment_id""",
    }
    rows = Rows()
    counts: dict[str, int] = {}
    for table, target in rows.tables().items():
        fetched = [tuple(row) for row in conn.execute(queries[table]).fetchall()]
        counts[table] = len(fetched)
        target.update(fetched)
    return rows, counts


class Node(NamedTuple):
    data: str
    first: datetime | None  # commit time of the transaction that first wrote the row
    last: datetime | None  # commit time of the transaction that wrote it last
    rewritten: bool  # written again (by a redelivered message) after its first write


def read_nodes(conn: psycopg.Connection[Any]) -> dict[str, Node]:
    """Every `nodestore_node` row with its first and last write times.

    A row's write time is the commit time of the transaction that wrote it (track_commit_timestamp
    is on in the private server): when it became durable. The upsert replaces a redelivered
    row, and with it the row's xmin, so the first writer comes from the scenario's trigger
    (`faults_first_write`, whose row shares the writing transaction)."""
    return {
        node_id: Node(data, first, last, bool(rewritten))
        for node_id, data, first, last, rewritten in conn.execute(
            "SELECT n.id, n.data, pg_xact_commit_timestamp(f.xmin),"
            " pg_xact_commit_timestamp(n.xmin), n.xmin <> f.xmin"
            " FROM nodestore_node n LEFT JOIN faults_first_write f USING (id)"
        ).fetchall()
    }


def judge(
    verdict: Verdict,
    records: Sequence[Sent],
    *,
    database_url: str,
    bootstrap: str,
    topic: str,
    dlq_topic: str,
    partitions: int,
    samples: Sequence[Sample],
    organization_of: Mapping[int, int],
    oracle: FieldOracle,
) -> None:
    """Fill `verdict` with the counts and every problem found."""
    by_position = {(r.partition, r.offset): r for r in records}
    verdict.sent = len(records)
    assert len(by_position) == len(records), "two records at one position"

    # ------------------------------------------------------------------ nodestore
    with psycopg.connect(database_url, autocommit=True) as conn:
        nodes = read_nodes(conn)
        node_rows = conn.execute("SELECT count(*) FROM nodestore_node").fetchone()
        rows, counts = read_rows(conn)
    assert node_rows is not None
    verdict.duplicated += int(node_rows[0]) - len(nodes)
    rewritten = sum(node.rewritten for node in nodes.values())
    if rewritten:
        verdict.notes.append(f"{rewritten} nodestore rows written again by redelivered messages")

    to_save = [r for r in records if r.outcome == "saved"]
    expected_nodes: set[str] = set()
    written_at: dict[tuple[int, int], float] = {}  # first writes: what the commit audit needs
    rewritten_at: dict[tuple[int, int], float] = {}  # last writes: where redeliveries show
    lost: list[Sent] = []
    wrong: list[str] = []
    undated = 0
    for record in to_save:
        expected_nodes.update((record.event_node, record.occurrence_node))
        event_row = nodes.get(record.event_node)
        occurrence_row = nodes.get(record.occurrence_node)
        if event_row is None or occurrence_row is None:
            lost.append(record)
            continue
        position = (record.partition, record.offset)
        if None in (event_row.first, occurrence_row.first, event_row.last, occurrence_row.last):
            undated += 1
        else:
            written_at[position] = max(_at(event_row.first), _at(occurrence_row.first))
            rewritten_at[position] = max(_at(event_row.last), _at(occurrence_row.last))
        document, _ = decode_blob(event_row.data)
        occurrence, _ = decode_blob(occurrence_row.data)
        for problem in content_mismatches(record, document, occurrence, oracle):
            wrong.append(f"{record.kind} at {record.partition}/{record.offset}: {problem}")
    if undated:
        verdict.fail(f"{undated} saved messages without a commit timestamp to audit them by")
    verdict.saved = len(to_save) - len(lost)
    if lost:
        sample = ", ".join(f"{r.kind}@{r.partition}/{r.offset}" for r in lost[:5])
        verdict.fail(f"{len(lost)} messages to save are not in the nodestore: {sample}")
    if wrong:
        verdict.fail(f"{len(wrong)} content mismatches, first: " + "; ".join(wrong[:5]))
    unexpected = set(nodes) - expected_nodes
    if unexpected:
        kinds = Counter(
            r.kind
            for r in records
            if r.outcome != "saved"
            and r.project_id is not None
            and r.event_id is not None
            and r.event_node in unexpected
        )
        verdict.fail(
            f"{len(unexpected)} nodestore rows no saved message explains (by kind: {dict(kinds)})"
        )

    # ------------------------------------------------------------------ rows
    expected = expected_rows(to_save, organization_of, oracle)
    for table, wanted in expected.tables().items():
        actual = rows.tables()[table]
        verdict.duplicated += counts[table] - len(actual)
        if actual != wanted:
            missing = sorted(wanted - actual, key=repr)[:5]
            extra = sorted(actual - wanted, key=repr)[:5]
            verdict.fail(f"{table}: missing {missing}, unexpected {extra}")

    # ------------------------------------------------------------------ dead letters
    letters = read_dead_letters(bootstrap, dlq_topic, append_time=True)
    lettered_at: dict[tuple[int, int], float] = {}
    copies: Counter[tuple[int, int]] = Counter()
    for letter in letters:
        headers = letter.headers
        if headers.get("original_topic") != topic:
            verdict.fail(f"dead letter from topic {headers.get('original_topic')!r}")
            continue
        position = (int(headers["original_partition"]), int(headers["original_offset"]))
        origin = by_position.get(position)
        if origin is None:
            verdict.fail(f"dead letter for {position}, which the suite never sent")
            continue
        copies[position] += 1
        lettered_at[position] = min(lettered_at.get(position, letter.at), letter.at)
        if origin.outcome != "dead_lettered":
            verdict.fail(
                f"{origin.kind} at {position} ({origin.outcome}) dead-lettered: "
                f"{headers.get('reason')} {headers.get('reason_detail', '')[:120]}"
            )
        elif headers.get("reason") not in origin.reasons:
            verdict.fail(
                f"{origin.kind} at {position} dead-lettered as {headers.get('reason')!r} "
                f"({headers.get('reason_detail', '')[:120]}), expected one of "
                f"{sorted(origin.reasons)}"
            )
        # A tombstone's dead letter is a tombstone, b"" stays b"".
        if letter.value != origin.value or letter.key != origin.key:
            verdict.fail(f"dead letter of {origin.kind} at {position} is not the original bytes")
    bad = [r for r in records if r.outcome == "dead_lettered"]
    undelivered = [r for r in bad if (r.partition, r.offset) not in copies]
    verdict.dead_lettered = len(bad) - len(undelivered)
    verdict.dead_letter_copies = sum(copies.values()) - len(copies)
    if undelivered:
        kinds = Counter(r.kind for r in undelivered)
        verdict.fail(f"{len(undelivered)} bad messages not dead-lettered: {dict(kinds)}")
    lost += undelivered

    skipped = [r for r in records if r.outcome == "skipped"]
    verdict.skipped = len(skipped)
    for record in skipped:
        if (
            record.project_id is not None
            and record.event_id is not None
            and record.event_node in nodes
        ):
            verdict.fail(f"{record.kind} at {record.partition}/{record.offset} was saved")
    verdict.lost = len(lost)

    # ------------------------------------------------------------------ committed offsets
    done_at: dict[tuple[int, int], float] = {**written_at, **lettered_at}
    violations = audit_commits(records, done_at, samples)
    redelivered = audit_commits(records, {**rewritten_at, **lettered_at}, samples)
    if redelivered and not violations:
        verdict.notes.append(
            f"{len(redelivered)} sampled commits were followed by a redelivery below them "
            "(saved before the commit, written again after it: at least once), e.g. "
            + redelivered[0]
        )
    backwards = commits_moved_back(samples)
    if backwards:
        verdict.notes.append("committed offsets moved back: " + "; ".join(backwards[:3]))
    if violations:
        verdict.fail(
            f"committed offsets passed unsaved work {len(violations)} times: "
            + "; ".join(violations[:3])
        )
    ends = end_offsets(bootstrap, topic, partitions)
    final = samples[-1].offsets if samples else {}
    if final != ends:
        verdict.fail(f"committed offsets {final} are not the end offsets {ends}")


def audit_commits(
    records: Sequence[Sent], done_at: Mapping[tuple[int, int], float], samples: Sequence[Sample]
) -> list[str]:
    """Samples whose committed offset passed a message not yet done at the sample's time.

    Per partition, `finished[i]` is when every message up to the i-th was done (the latest
    write or dead letter among them; skipped messages count as done at once, never-done ones as
    never), so a sample is checked with one binary search."""
    by_partition: dict[int, list[Sent]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)
    offsets: dict[int, list[int]] = {}
    finished: dict[int, list[float]] = {}
    for partition, partition_records in by_partition.items():
        partition_records.sort(key=lambda r: r.offset)
        offsets[partition] = [r.offset for r in partition_records]
        latest = 0.0
        running: list[float] = []
        for record in partition_records:
            if record.outcome != "skipped":
                latest = max(latest, done_at.get((partition, record.offset), math.inf))
            running.append(latest)
        finished[partition] = running
    violations: list[str] = []
    for sample in samples:
        for partition, committed in sample.offsets.items():
            below = bisect.bisect_left(offsets.get(partition, []), committed)
            if below == 0 or finished[partition][below - 1] <= sample.at:
                continue
            culprit = next(
                r
                for r in by_partition[partition][:below]
                if r.outcome != "skipped"
                and done_at.get((partition, r.offset), math.inf) > sample.at
            )
            when = done_at.get((partition, culprit.offset))
            violations.append(
                f"offset {committed} of partition {partition} committed by {sample.at:.3f} "
                f"while {culprit.kind} at {culprit.offset} was "
                + ("never done" if when is None else f"done at {when:.3f}")
            )
    return violations


def _at(moment: datetime | None) -> float:
    assert moment is not None
    return moment.timestamp()


def commits_moved_back(samples: Sequence[Sample]) -> list[str]:
    """Where a partition's committed offset was lower than in the sample before (a commit the
    broker lost or one made from an older position): not a loss, but the cause of redelivery."""
    moves: list[str] = []
    previous: dict[int, int] = {}
    for sample in samples:
        for partition, committed in sample.offsets.items():
            before = previous.get(partition)
            if before is not None and committed < before:
                moves.append(f"partition {partition} {before} -> {committed} at {sample.at:.3f}")
            previous[partition] = committed
    return moves
