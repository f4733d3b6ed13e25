"""One fault scenario: its own database, topics, consumer group and Redis prefix on the private
stack; worker processes; the feed of messages; the offset sampler; and, at the end, the drain
and the verdict.

    scenario = Scenario.create(stack, "worker_sigkill", folder)
    worker = scenario.spawn()
    scenario.feed.start(records, seconds=20)
    ... inject faults, calling scenario.fault() at each ...
    verdict = scenario.finish(records)
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.storage.admin import create_organization, create_project
from consumer.storage.migrate import migrate
from tests.faults.expect import FieldOracle
from tests.faults.process import WorkerProcess
from tests.faults.sampler import OffsetSampler, Sample
from tests.faults.stack import FaultStack
from tests.faults.traffic import Feed, Sent
from tests.faults.verdict import Verdict, end_offsets, judge

PARTITIONS = 4
# How long a drained worker may take to exit (the worker's join_timeout is 20 s).
DRAIN_TIMEOUT = 60.0
# Settings every worker of the suite runs with: a short session so a killed member's
# partitions move on within seconds; small batches so every scenario commits many times.
WORKER_ENV = {
    "CONSUMER_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "CONSUMER_WORKER_BATCH_TIME_MS": "100",
    "CONSUMER_WORKER_LOG_LEVEL": "INFO",
}


# Seed of the random fault moments and traffic: `FAULTS_SEED`, else one per run, written in the
# report so a failing run can be repeated.
SEED = int(os.environ.get("FAULTS_SEED", str(int(time.time()) % 100_000)))


def events_per_scenario() -> int:
    """The size knob: `FAULTS_EVENTS` messages per scenario (`make faults` sets 50000)."""
    return int(os.environ.get("FAULTS_EVENTS", "1000"))


# A redelivered message is written again (the nodestore upsert replaces the row, and with it the
# row's xmin), so the row's own commit time is its latest write. The commit audit needs the
# first: a trigger, in the suite's databases only, notes each node's first insert in a side
# table whose row shares the writing transaction (its xmin's commit time is the first write's).
FIRST_WRITE_AUDIT = """
CREATE TABLE faults_first_write (id text PRIMARY KEY);
CREATE FUNCTION faults_note_first_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO faults_first_write (id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
-- AFTER INSERT row triggers fire for inserted rows only, not for ON CONFLICT's updates.
CREATE TRIGGER faults_first_write AFTER INSERT ON nodestore_node
    FOR EACH ROW EXECUTE FUNCTION faults_note_first_write();
"""


@dataclass
class Scenario:
    stack: FaultStack
    name: str
    folder: Path
    database_url: str
    topic: str
    dlq_topic: str
    group: str
    prefix: str
    organization_of: dict[int, int]
    batch_size: int = 100
    workers: list[WorkerProcess] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def create(
        cls,
        stack: FaultStack,
        name: str,
        folder: Path,
        *,
        organizations: int = 2,
        projects_per_organization: int = 2,
        batch_size: int = 100,
    ) -> Scenario:
        unique = uuid.uuid4().hex[:8]
        database_url = stack.create_database(f"faults_{name}_{unique}")
        migrate(database_url)
        organization_of: dict[int, int] = {}
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(FIRST_WRITE_AUDIT)
            for org_index in range(organizations):
                org_id = create_organization(conn, f"{name}-org-{org_index}".replace("_", "-"))
                for project_index in range(projects_per_organization):
                    project_id = create_project(conn, org_id, f"project-{project_index}")
                    organization_of[project_id] = org_id
        topic = f"faults-{name}-{unique}"
        scenario = cls(
            stack=stack,
            name=name,
            folder=folder / name,
            database_url=database_url,
            topic=topic,
            dlq_topic=f"{topic}-dlq",
            group=f"faults-{name}-{unique}",
            prefix=f"faults:{name}:{unique}:",
            organization_of=organization_of,
            batch_size=batch_size,
        )
        scenario.folder.mkdir(parents=True, exist_ok=True)
        admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
        created = admin.create_topics(
            [
                NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1),
                # The broker stamps each dead letter when it appends it: the verdict's time
                # of the dead letter is when it became durable, not when it was produced.
                NewTopic(
                    scenario.dlq_topic,
                    num_partitions=1,
                    replication_factor=1,
                    config={"message.timestamp.type": "LogAppendTime"},
                ),
            ]
        )
        for future in created.values():
            future.result(timeout=30)
        scenario.feed = Feed(stack.kafka_bootstrap, topic)
        scenario.sampler = OffsetSampler(stack.kafka_bootstrap, topic, scenario.group, PARTITIONS)
        scenario.sampler.start()
        return scenario

    feed: Feed = field(init=False)
    sampler: OffsetSampler = field(init=False)

    @property
    def live_projects(self) -> list[int]:
        return sorted(self.organization_of)

    def add_project(self, organization: str, slug: str) -> int:
        """A project in a new organization of this scenario's database."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            org_id = create_organization(conn, organization)
            project_id = create_project(conn, org_id, slug)
        self.organization_of[project_id] = org_id
        return project_id

    # ------------------------------------------------------------------ workers

    def env(self, **extra: str) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CONSUMER_")
            and key not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REDIS_URL")
        }
        return {
            **inherited,
            **WORKER_ENV,
            "KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka_bootstrap,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.stack.redis_url,
            "CONSUMER_REDIS_KEY_PREFIX": self.prefix,
            **extra,
        }

    def spawn(self, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(
            name=f"{self.name}-worker-{len(self.workers)}",
            args=[
                *("--topic", self.topic, "--group", self.group, "--dlq-topic", self.dlq_topic),
                *("--metrics-port", "0", "--batch-size", str(self.batch_size)),
            ],
            env=self.env(**extra_env),
            log=self.folder / "workers.log",
        )
        self.workers.append(worker)
        return worker.start()

    def alive(self) -> list[WorkerProcess]:
        return [worker for worker in self.workers if worker.alive()]

    def fault(self, what: str) -> float:
        """Record that a fault happens now (for the time to recover)."""
        at = time.time()
        self.faults.append(at)
        self.notes.append(f"{time.monotonic() - self.started:6.1f}s {what}")
        return at

    # ------------------------------------------------------------------ progress

    def committed(self) -> Mapping[int, int]:
        latest = self.sampler.latest()
        return latest.offsets if latest is not None else {}

    def wait_for_commit_after(self, moment: float, timeout: float = 120.0) -> None:
        """Block until the group commits something new after `moment` (wall clock) and after
        this call: the baseline is asked for now, since the sampler's last sample may predate
        the final commit of a worker that just drained (which would pass for a new one)."""
        fresh = self.sampler.sample()
        baseline = fresh.total if fresh is not None else _before(self.sampler.samples, moment)
        since = max(moment, fresh.at if fresh is not None else moment)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.sampler.latest()
            if latest is not None and latest.at > since and latest.total > baseline:
                return
            self._check_workers()
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: nothing committed within {timeout:.0f}s\n{self.logs()}")

    def wait_until_committed(self, records: Sequence[Sent], timeout: float) -> None:
        """Block until the committed offsets cover every record (all acknowledged)."""
        wanted: dict[int, int] = {}
        for record in records:
            assert record.partition >= 0, "wait_until_committed before the feed acknowledged"
            wanted[record.partition] = max(wanted.get(record.partition, 0), record.offset + 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = self.committed()
            if all(committed.get(p, 0) >= offset for p, offset in wanted.items()):
                return
            self._check_workers()
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name}: committed {dict(self.committed())}, wanted {wanted} within "
            f"{timeout:.0f}s\n{self.logs()}"
        )

    def _check_workers(self) -> None:
        if self.workers and not self.alive():
            codes = [worker.exit_code() for worker in self.workers]
            raise AssertionError(f"{self.name}: every worker exited ({codes})\n{self.logs()}")

    def logs(self, lines: int = 40) -> str:
        path = self.folder / "workers.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no worker log)"

    # ------------------------------------------------------------------ the end

    def finish(self, records: Sequence[Sent], oracle: FieldOracle) -> Verdict:
        """Wait for every message to be committed, drain every worker with SIGTERM (exit code
        0 each), and judge. Always stops the workers and the sampler."""
        verdict = Verdict(self.name)
        try:
            self.feed.hurry()
            self.feed.join()
            ends = end_offsets(self.stack.kafka_bootstrap, self.topic, PARTITIONS)
            timeout = 120 + len(records) / 200
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and dict(self.committed()) != ends:
                self._check_workers()
                time.sleep(0.2)
            for worker in self.alive():
                code = worker.terminate(DRAIN_TIMEOUT)
                if code != 0:
                    verdict.fail(f"{worker.name} exited with {code} after SIGTERM")
        finally:
            for worker in self.workers:
                if not worker.stopped_by_suite and worker.exit_code() is not None:
                    verdict.fail(f"{worker.name} exited by itself with code {worker.exit_code()}")
                worker.ensure_dead()
            self.sampler.stop()
            self.feed.close()
        verdict.seconds = time.monotonic() - self.started
        samples = self.sampler.samples
        commits = len({tuple(sorted(sample.offsets.items())) for sample in samples})
        verdict.notes = [
            *self.notes,
            f"{len(samples)} offset samples ({self.sampler.failures} failed during outages), "
            f"{commits} distinct committed positions audited",
        ]
        verdict.recovery = recovery_times(self.faults, self.sampler.samples)
        judge(
            verdict,
            records,
            database_url=self.database_url,
            bootstrap=self.stack.kafka_bootstrap,
            topic=self.topic,
            dlq_topic=self.dlq_topic,
            partitions=PARTITIONS,
            samples=self.sampler.samples,
            organization_of=self.organization_of,
            oracle=oracle,
        )
        return verdict


def _before(samples: Sequence[Sample], moment: float) -> int:
    total = 0
    for sample in samples:
        if sample.at > moment:
            break
        total = sample.total
    return total


def recovery_times(faults: Sequence[float], samples: Sequence[Sample]) -> list[float]:
    """For each fault: seconds until every partition that moves on afterwards has committed
    again (a partition with nothing left to commit does not count)."""
    result = []
    for fault in faults:
        baseline: dict[int, int] = {}
        for sample in samples:
            if sample.at > fault:
                break
            baseline = sample.offsets
        first_advance: dict[int, float] = {}
        for sample in samples:
            if sample.at <= fault:
                continue
            for partition, offset in sample.offsets.items():
                if partition not in first_advance and offset > baseline.get(partition, -1):
                    first_advance[partition] = sample.at
        if first_advance:
            result.append(max(first_advance.values()) - fault)
    return result
