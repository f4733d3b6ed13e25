"""Fault injection on real services (issue 8): nothing is lost, nothing is saved twice, no
commit passes unsaved work, whatever happens to the worker, PostgreSQL, Redis or the broker.

Every scenario runs real `consumer run` processes against the suite's private stack, with
`FAULTS_EVENTS` messages over 4 partitions (realistic sentry-sdk events, with a share of bad
ones mixed in), injects its faults while the stream flows, drains the workers with SIGTERM
(exit code 0) and hands everything to `verdict.judge`. The table of all scenarios is printed at
the end of the session and written to `bench-results/faults-latest.txt`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg_pool import ConnectionPool

from consumer.storage.migrate import migrate
from consumer.storage.nodestore import SMALL_WRITE, NodeStore
from scripts.services import ROOT
from tests.faults.corpus import KINDS, Context, corpus
from tests.faults.expect import FieldOracle
from tests.faults.scenario import FIRST_WRITE_AUDIT, SEED, Scenario, events_per_scenario
from tests.faults.stack import FaultStack
from tests.faults.traffic import Occurrences, Sent, mix
from tests.faults.verdict import Verdict, read_nodes

EVENTS = events_per_scenario()
pytestmark = [pytest.mark.faults, pytest.mark.timeout(300 + EVENTS // 40)]

# Kinds of bad message mixed into every scenario (the full corpus is scenario 5's).
LIGHT_KINDS = [kind for kind in KINDS if kind.name != "message_too_large"]


def stream_seconds(minimum: float) -> float:
    """How long the feed runs: at least `minimum` (the faults need the stream flowing), longer
    for large runs so the worker is not simply buried under the whole backlog at once."""
    return max(minimum, EVENTS / 1500)


@pytest.fixture(scope="session")
def logs() -> Path:
    """Worker logs of this session, kept after it (under .cache/, which git ignores)."""
    folder = ROOT / ".cache" / "faults" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"fault suite: seed {SEED}, {EVENTS} messages per scenario, worker logs in {folder}")
    return folder


@pytest.fixture
def scenario_factory(
    stack: FaultStack, logs: Path, record_verdict: list[Verdict]
) -> Iterator[Callable[..., Scenario]]:
    made: list[Scenario] = []

    def make(name: str, **kwargs: int) -> Scenario:
        scenario = Scenario.create(stack, name, logs, **kwargs)
        made.append(scenario)
        return scenario

    yield make
    for scenario in made:
        for worker in scenario.workers:
            worker.ensure_dead()


def traffic(scenario: Scenario, count: int, rng: random.Random) -> list[Sent]:
    """`count` messages: good sentry-sdk occurrences with about 1% bad ones mixed in."""
    occurrences = Occurrences(scenario.live_projects, seed=rng.randrange(2**31))
    context = Context(scenario.live_projects, rng)
    bad = [
        rng.choice(LIGHT_KINDS).build(occurrences.next(), context)
        for _ in range(max(3, count // 100))
    ]
    return mix(occurrences.good(count - len(bad)), bad, rng)


def conclude(
    scenario: Scenario, records: list[Sent], oracle: FieldOracle, record: list[Verdict]
) -> Verdict:
    verdict = scenario.finish(records, oracle)
    record.append(verdict)
    assert not verdict.problems, "\n".join(
        [f"{scenario.name}: {len(verdict.problems)} problems", *verdict.problems, scenario.logs()]
    )
    assert verdict.lost == 0
    assert verdict.duplicated == 0
    return verdict


@contextmanager
def restarted_if_down(stack: FaultStack, service: str) -> Iterator[None]:
    """Start `service` again on the way out if the scenario left it down (a wait that failed
    mid-fault), so the next scenario finds the stack whole."""
    try:
        yield
    finally:
        if not stack.ready(service):
            stack.start(service)


def outage(
    scenario: Scenario, stack: FaultStack, service: str, what: str, *, crash: bool, down: float
) -> float:
    """Kill (`crash`) or stop `service`, record the fault as `what`, start the service again
    `down` seconds later; the moment of the fault, to wait for the recovery from."""
    if crash:
        stack.kill(service)
    else:
        stack.stop(service)
    at = scenario.fault(what)
    time.sleep(down)
    stack.start(service)
    return at


# ---------------------------------------------------------------------------- 1. SIGKILL


def test_worker_killed_at_random_moments(
    scenario_factory: Callable[..., Scenario], oracle: FieldOracle, record_verdict: list[Verdict]
) -> None:
    """SIGKILL the worker five times at random moments (four while it works through the backlog
    its restart left, one while it starts), restarting it each time."""
    rng = random.Random(SEED + 1)
    scenario = scenario_factory("worker_sigkill")
    records = traffic(scenario, EVENTS, rng)
    worker = scenario.spawn()
    scenario.feed.start(records, seconds=stream_seconds(60))
    for kill in range(5):
        if kill == 2:
            # Once while it starts: loading, joining the group, its first batch.
            time.sleep(rng.uniform(0.5, 3.0))
            moment = "while starting"
        else:
            scenario.wait_for_commit_after(worker.started_at)
            time.sleep(rng.uniform(0.0, 1.5))
            moment = "while working"
        worker.kill()
        scenario.fault(f"SIGKILL worker ({kill + 1} of 5, {moment})")
        worker = scenario.spawn()
    conclude(scenario, records, oracle, record_verdict)


# ---------------------------------------------------------------------------- 2. storage


def test_postgres_restarted_mid_stream(
    scenario_factory: Callable[..., Scenario],
    stack: FaultStack,
    oracle: FieldOracle,
    record_verdict: list[Verdict],
) -> None:
    """PostgreSQL crashes (SIGKILL of every server process) and later shuts down cleanly, each
    time mid-stream; the worker waits, retries, and goes on without a restart."""
    rng = random.Random(SEED + 2)
    scenario = scenario_factory("postgres_restart")
    records = traffic(scenario, EVENTS, rng)
    worker = scenario.spawn()
    scenario.feed.start(records, seconds=stream_seconds(30))
    with restarted_if_down(stack, "postgres"):
        scenario.wait_for_commit_after(worker.started_at)
        time.sleep(rng.uniform(1.0, 3.0))
        crash = outage(
            scenario, stack, "postgres", "PostgreSQL killed (crash)", crash=True, down=3.0
        )
        scenario.wait_for_commit_after(crash)
        time.sleep(rng.uniform(1.0, 3.0))
        stop = outage(
            scenario, stack, "postgres", "PostgreSQL stopped (fast shutdown)", crash=False, down=3.0
        )
        scenario.wait_for_commit_after(stop)
    conclude(scenario, records, oracle, record_verdict)


def test_redis_stopped_and_flushed_mid_stream(
    scenario_factory: Callable[..., Scenario],
    stack: FaultStack,
    oracle: FieldOracle,
    record_verdict: list[Verdict],
) -> None:
    """Redis goes away for a while, then comes back empty; later it is flushed. Redis is only a
    cache: nothing may be lost or created twice."""
    rng = random.Random(SEED + 3)
    scenario = scenario_factory("redis_stop_flush")
    records = traffic(scenario, EVENTS, rng)
    worker = scenario.spawn()
    scenario.feed.start(records, seconds=stream_seconds(30))
    with restarted_if_down(stack, "redis"):
        scenario.wait_for_commit_after(worker.started_at)
        time.sleep(rng.uniform(1.0, 3.0))
        stack.stop("redis")
        stopped = scenario.fault("Redis stopped")
        scenario.wait_for_commit_after(stopped)  # the worker goes on without its cache
        time.sleep(5.0)
        stack.start("redis")
        scenario.notes.append("Redis started again (empty)")
        time.sleep(rng.uniform(2.0, 4.0))
        redis.Redis.from_url(stack.redis_url).flushall()
        flushed = scenario.fault("Redis flushed")
        scenario.wait_for_commit_after(flushed)
    conclude(scenario, records, oracle, record_verdict)


# ---------------------------------------------------------------------------- 3. broker


def test_broker_restarted_mid_stream(
    scenario_factory: Callable[..., Scenario],
    stack: FaultStack,
    oracle: FieldOracle,
    record_verdict: list[Verdict],
) -> None:
    """The broker crashes (SIGKILL) mid-stream and comes back after its log recovery; later it
    is restarted cleanly. Producer, worker, dead letters and commits all ride it out."""
    rng = random.Random(SEED + 4)
    scenario = scenario_factory("broker_restart")
    records = traffic(scenario, EVENTS, rng)
    worker = scenario.spawn()
    scenario.feed.start(records, seconds=stream_seconds(45))
    with restarted_if_down(stack, "kafka"):
        scenario.wait_for_commit_after(worker.started_at)
        time.sleep(rng.uniform(1.0, 3.0))
        crash = outage(scenario, stack, "kafka", "broker killed (crash)", crash=True, down=2.0)
        scenario.wait_for_commit_after(crash, timeout=180)
        time.sleep(rng.uniform(1.0, 3.0))
        stop = outage(
            scenario, stack, "kafka", "broker stopped (clean shutdown)", crash=False, down=0.0
        )
        scenario.wait_for_commit_after(stop, timeout=180)
    conclude(scenario, records, oracle, record_verdict)


# ---------------------------------------------------------------------------- 4. group


def test_three_workers_join_and_leave(
    scenario_factory: Callable[..., Scenario], oracle: FieldOracle, record_verdict: list[Verdict]
) -> None:
    """Up to three workers in one group; members join, drain away (SIGTERM, exit 0) and crash
    away (SIGKILL) while the stream flows, each change a rebalance."""
    rng = random.Random(SEED + 5)
    scenario = scenario_factory("group_rebalance")
    records = traffic(scenario, EVENTS, rng)
    first = scenario.spawn()
    scenario.feed.start(records, seconds=stream_seconds(75))
    scenario.wait_for_commit_after(first.started_at)
    second = scenario.spawn()
    scenario.fault("second worker joins")
    third = scenario.spawn()
    scenario.fault("third worker joins")
    scenario.wait_for_commit_after(third.started_at)
    time.sleep(rng.uniform(1.0, 3.0))
    code = first.terminate()
    left = scenario.fault(f"first worker drained away (exit {code})")
    assert code == 0, scenario.logs()
    scenario.wait_for_commit_after(left)
    fourth = scenario.spawn()
    scenario.fault("a new worker joins")
    scenario.wait_for_commit_after(fourth.started_at)
    time.sleep(rng.uniform(1.0, 3.0))
    second.kill()
    crashed = scenario.fault("second worker killed (SIGKILL)")
    scenario.wait_for_commit_after(crashed)
    time.sleep(rng.uniform(1.0, 3.0))
    code = third.terminate(signum=signal.SIGINT)
    left = scenario.fault(f"third worker interrupted away (SIGINT, exit {code})")
    assert code == 0, scenario.logs()
    scenario.wait_for_commit_after(left)
    scenario.spawn()
    scenario.fault("a new worker joins")
    conclude(scenario, records, oracle, record_verdict)


# ---------------------------------------------------------------------------- 5. bad input


def test_bad_input_mixed_into_good_traffic(
    scenario_factory: Callable[..., Scenario],
    stack: FaultStack,
    oracle: FieldOracle,
    record_verdict: list[Verdict],
) -> None:
    """Every kind of the corpus (`corpus.KINDS`: not JSON, invalid UTF-8, wrong types, missing
    fields, numbers out of range, deep nesting, huge strings, an oversized message, NaN and
    infinities, mismatched ids, unknown projects, invalid releases and dists, SQL and shell
    metacharacters, unexpected payload types...) twice, in good traffic; between the two
    rounds a project and an organization are soft-deleted with the `consumer` commands."""
    rng = random.Random(SEED + 6)
    scenario = scenario_factory("bad_input")
    doomed_project = scenario.add_project("doomed-project-org", "doomed-project")
    doomed_org_project = scenario.add_project("doomed-org", "in-doomed-org")
    occurrences = Occurrences(scenario.live_projects, seed=rng.randrange(2**31))
    half = max(EVENTS // 2 - len(KINDS), 100)

    def round_of(doomed_outcome: str) -> list[Sent]:
        doomed = occurrences.good(10, [doomed_project, doomed_org_project])
        for record in doomed:
            if doomed_outcome == "skipped":
                record.outcome = "skipped"
                record.kind = (
                    "project_deleted"
                    if record.project_id == doomed_project
                    else "organization_deleted"
                )
        live = [p for p in scenario.live_projects if p not in (doomed_project, doomed_org_project)]
        others = corpus(occurrences, live, rng) + doomed
        rng.shuffle(others)
        return mix(occurrences.good(half, live), others, rng)

    worker = scenario.spawn()
    first = round_of("saved")
    scenario.feed.send(first, seconds=stream_seconds(10) / 2)
    scenario.wait_until_committed(first, timeout=120 + len(first) / 100)
    for command in (
        ["projects", "delete", str(doomed_project)],
        ["orgs", "delete", "doomed-org"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "consumer", "--config", os.devnull, *command],
            env=scenario.env(),
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
        scenario.notes.append(f"consumer {' '.join(command)}: {result.stdout.strip()}")
    second = round_of("skipped")
    scenario.feed.send(second, seconds=stream_seconds(10) / 2)
    assert worker.alive(), scenario.logs()
    conclude(scenario, first + second, oracle, record_verdict)
    with psycopg.connect(scenario.database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables is not None and tables[0] >= 9, "a table went missing"


# ---------------------------------------------------------------------------- 6. drain


def test_drained_with_sigterm_mid_stream(
    scenario_factory: Callable[..., Scenario], oracle: FieldOracle, record_verdict: list[Verdict]
) -> None:
    """SIGTERM (and once SIGINT) while batches are in flight: the worker finishes the batch,
    commits everything it saved, exits 0; a new worker picks up exactly there."""
    rng = random.Random(SEED + 7)
    scenario = scenario_factory("sigterm_drain")
    records = traffic(scenario, EVENTS, rng)
    worker = scenario.spawn()
    scenario.feed.start(records, seconds=stream_seconds(40))
    for index, signum in enumerate((signal.SIGTERM, signal.SIGINT, signal.SIGTERM)):
        scenario.wait_for_commit_after(worker.started_at)
        time.sleep(rng.uniform(0.0, 1.5))
        stopped_at = time.time()
        code = worker.terminate(signum=signum)
        drained = time.time() - stopped_at
        scenario.fault(f"{signal.Signals(signum).name} {index + 1}: exit {code} in {drained:.1f}s")
        assert code == 0, scenario.logs()
        unsaved = saved_but_uncommitted(scenario, records, stopped_at + drained)
        assert not unsaved, (
            f"after the drain, saved messages above the committed offsets: {unsaved[:5]}"
        )
        worker = scenario.spawn()
    conclude(scenario, records, oracle, record_verdict)


def saved_but_uncommitted(scenario: Scenario, records: list[Sent], moment: float) -> list[str]:
    """Messages written to the nodestore by `moment` at or above the committed offset."""
    sample = scenario.sampler.sample(timeout=10)
    assert sample is not None
    by_node = {r.event_node: r for r in records if r.outcome == "saved" and r.partition >= 0}
    with psycopg.connect(scenario.database_url) as conn:
        rows = conn.execute(
            "SELECT id FROM nodestore_node WHERE id = ANY(%s) AND timestamp <= to_timestamp(%s)",
            (list(by_node), moment),
        ).fetchall()
    found = [by_node[row[0]] for row in rows]
    return [
        f"{r.partition}/{r.offset} (committed {sample.offsets.get(r.partition)})"
        for r in found
        if r.offset >= sample.offsets.get(r.partition, 0)
    ]


def test_the_audit_dates_a_node_by_its_first_write(stack: FaultStack) -> None:
    """A redelivered message rewrites its rows; the commit audit must still see the first write
    (else a commit made after it would look premature). Both write paths: VALUES and COPY."""
    database_url = stack.create_database(f"faults_audit_{os.getpid()}_{int(time.time())}")
    migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(FIRST_WRITE_AUDIT)
    pool = ConnectionPool(database_url, min_size=1, max_size=1, open=True)
    try:
        store = NodeStore(pool)
        few = [(f"few-{i}", "a") for i in range(2)]
        many = [(f"many-{i}", "a") for i in range(SMALL_WRITE + 4)]
        store.set_many_encoded(few)
        store.set_many_encoded(many)
        with psycopg.connect(database_url, autocommit=True) as conn:
            first = read_nodes(conn)
        time.sleep(0.05)
        store.set_many_encoded([(i, "b") for i, _ in few])
        store.set_many_encoded([(i, "b") for i, _ in many])
        with psycopg.connect(database_url, autocommit=True) as conn:
            again = read_nodes(conn)
            rows = conn.execute("SELECT count(*) FROM faults_first_write").fetchone()
    finally:
        pool.close()
    assert rows == (len(few) + len(many),)
    assert not any(node.rewritten for node in first.values())
    assert all(node.rewritten for node in again.values())
    assert {i: node.data for i, node in again.items()} == {i: "b" for i, _ in few + many}
    assert {i: node.first for i, node in again.items()} == {
        i: node.first for i, node in first.items()
    }
    for node_id, node in again.items():
        assert node.first is not None and node.last is not None
        assert node.last > node.first, node_id
