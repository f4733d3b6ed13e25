"""`consumer bench`: how fast the worker saves events, against two baselines measured in the
same run on the same messages (the machine is shared and noisy, so only ratios carry over).

1. Pre-load N realistic events (the `consumer produce` mix: sentry-sdk events wrapped as
   occurrences) into a fresh topic with P partitions, spread over a few projects.
2. Measure, each on a fresh database and its own consumer group, reading the same messages,
   every process of a measurement starting its work at the same moment (the baselines' processes
   each read a fixed share of the partitions, so that both really work):
   * worker: the real worker with the chosen settings, in `processes` worker processes;
   * limit: consume, decode, and bulk-copy each raw message into a scratch nodestore-shaped
     table, committing PostgreSQL and Kafka per batch, with no other work (same process count);
   * per-event: the same pipeline with batching turned off, as Sentry's consumer runs it: one
     message at a time on the poll thread (decode, normalize, `save_generic_events([job])`), one
     get-or-create round trip per release, environment and link (the string-to-id and link
     caches off; the model cache of projects and organizations on, as Sentry's) and one
     nodestore upsert per event, offsets committed once per second. It is slow, so it reads only
     the first `per_event_events` messages; its rate is a rate all the same.
3. Report events per second from the first poll to the last commit, batch latency p50/p99, peak
   resident memory of every process, CPU time per event (the measured processes and their Relay
   processes, if any), and the ratios worker/limit and worker/per-event; medians over `runs`
   repetitions; also as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import queue
import resource
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.errors import ConfigurationError
from consumer.kafka_admin import create_topic
from consumer.settings import Settings

if TYPE_CHECKING:
    from arroyo.types import Commit, Partition

    from consumer.pipeline.job import Job
    from consumer.strategy.save_and_dead_letter import Pipeline

MEASUREMENTS = ("worker", "limit", "per_event")
# How long a measured process waits at the start line for the others (spawn and imports).
START_TIMEOUT = 120.0


@dataclass
class ProcessStats:
    """What one measured process reports when it is done."""

    messages: int = 0
    first_poll: float | None = None  # wall clock (time.time) of the first message received
    last_commit: float | None = None  # wall clock of the last commit
    batch_seconds: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # its own and its children's (a worker's Relay process)
    max_rss_bytes: int = 0
    child_max_rss_bytes: int = 0  # the largest child's peak (0: no child)
    exit_code: int = 0


@dataclass
class Slot:
    """One measured process's place in its measurement: its share of the topic's partitions
    (the baselines read them by assignment; a consumer that joins a group a second after the
    others would otherwise find its partitions already drained, and the baseline would measure
    one process where it claims two) and the start line every process waits at once it is set
    up, so that no process starts its clock while another is still importing."""

    index: int
    partitions: list[int]
    start: Any  # a multiprocessing Barrier of the measurement's processes

    def wait_for_the_others(self) -> None:
        self.start.wait(timeout=START_TIMEOUT)

    def assign(self, consumer: Any, topic: str) -> None:
        from confluent_kafka import TopicPartition

        # No offset given: the group's committed offset, else auto.offset.reset (earliest).
        consumer.assign([TopicPartition(topic, partition) for partition in self.partitions])


@dataclass
class Measurement:
    kind: str
    events: int
    seconds: float
    events_per_second: float
    batch_p50_ms: float
    batch_p99_ms: float
    max_rss_mb: list[float]
    cpu_us_per_event: float
    exit_codes: list[int]
    events_per_process: list[int] = field(default_factory=list)
    child_max_rss_mb: list[float] = field(default_factory=list)  # each process's Relay process


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def combine(kind: str, stats: Sequence[ProcessStats]) -> Measurement:
    events = sum(s.messages for s in stats)
    starts = [s.first_poll for s in stats if s.first_poll is not None]
    ends = [s.last_commit for s in stats if s.last_commit is not None]
    seconds = (max(ends) - min(starts)) if starts and ends else 0.0
    batches = [b for s in stats for b in s.batch_seconds]
    cpu = sum(s.cpu_seconds for s in stats)
    return Measurement(
        kind=kind,
        events=events,
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds, 1) if seconds > 0 else 0.0,
        batch_p50_ms=round(_percentile(batches, 0.5) * 1000, 2),
        batch_p99_ms=round(_percentile(batches, 0.99) * 1000, 2),
        max_rss_mb=[round(s.max_rss_bytes / 2**20, 1) for s in stats],
        cpu_us_per_event=round(cpu / events * 1e6, 1) if events else 0.0,
        exit_codes=[s.exit_code for s in stats],
        events_per_process=[s.messages for s in stats],
        child_max_rss_mb=[round(s.child_max_rss_bytes / 2**20, 1) for s in stats],
    )


def _finish(stats: ProcessStats) -> ProcessStats:
    """Resource usage of this process and of its children that exited (a worker's Relay
    process is closed and waited for when the worker stops)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats.cpu_seconds = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
    stats.max_rss_bytes = usage.ru_maxrss * 1024  # Linux reports kilobytes
    stats.child_max_rss_bytes = children.ru_maxrss * 1024
    return stats


# ------------------------------------------------------------------------------ the worker


class RunClock:
    """Probes for a Worker (its `wrap_pipeline` and `wrap_commit`): the wall-clock time of its first
    batch save and of its last commit that moved offsets, and each batch save's duration."""

    def __init__(self) -> None:
        self.first_save: float | None = None
        self.last_commit: float | None = None
        self.batch_seconds: list[float] = []

    def wrap_pipeline(self, inner: Pipeline) -> Pipeline:
        clock = self

        class Timed:
            def save(self, jobs: Sequence[Job]) -> None:
                started = time.perf_counter()
                if clock.first_save is None:
                    clock.first_save = time.time()
                inner.save(jobs)
                clock.batch_seconds.append(time.perf_counter() - started)

        return Timed()

    def wrap_commit(self, commit: Commit) -> Commit:
        def timed(offsets: Mapping[Partition, int], force: bool = False) -> None:
            commit(offsets, force)
            if offsets:
                self.last_commit = time.time()

        return timed

    @property
    def seconds(self) -> float:
        """From the first save to the last commit (0 when either never happened)."""
        if self.first_save is None or self.last_commit is None:
            return 0.0
        return self.last_commit - self.first_save


def _worker_process(settings: Settings, results: Queue[ProcessStats], slot: Slot) -> None:
    """A measured worker process: the real Worker, with the probes of a RunClock."""
    from consumer import metrics
    from consumer.worker import Worker

    clock = RunClock()
    worker = Worker(settings, wrap_commit=clock.wrap_commit, wrap_pipeline=clock.wrap_pipeline)
    slot.wait_for_the_others()
    stats = ProcessStats(exit_code=worker.run())
    stats.first_poll, stats.last_commit = clock.first_save, clock.last_commit
    stats.batch_seconds = clock.batch_seconds
    stats.messages = int(metrics.total(metrics.MESSAGES))
    results.put(_finish(stats))


# ------------------------------------------------------------------------------- the limit

LIMIT_TABLE = "bench_limit_node"


def _limit_process(settings: Settings, results: Queue[ProcessStats], slot: Slot) -> None:
    """Consume, decode, COPY the raw messages into a nodestore-shaped table; commit both per batch."""
    import orjson
    import psycopg
    from confluent_kafka import Consumer

    from consumer.storage.pool import conninfo

    stats = ProcessStats()
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": settings.kafka.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    slot.assign(consumer, settings.kafka.topic)
    with psycopg.connect(conninfo(settings.database)) as conn:
        slot.wait_for_the_others()
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < settings.worker.exit_when_idle:
            messages = consumer.consume(settings.worker.batch_size, timeout=0.2)
            messages = [m for m in messages if m.error() is None]
            if not messages:
                continue
            started = time.perf_counter()
            if stats.first_poll is None:
                stats.first_poll = time.time()
            now = datetime.now(UTC)
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY {LIMIT_TABLE} (id, data, timestamp) FROM STDIN") as copy,
            ):
                for message in messages:
                    value = message.value() or b""
                    orjson.loads(value)
                    copy.write_row(
                        (f"{message.partition()}:{message.offset()}", value.decode(), now)
                    )
            conn.commit()
            consumer.commit(asynchronous=False)
            stats.last_commit = time.time()
            stats.batch_seconds.append(time.perf_counter() - started)
            stats.messages += len(messages)
            idle_since = time.monotonic()
    consumer.close()
    results.put(_finish(stats))


# -------------------------------------------------------------------------- the per-event


def _per_event_process(settings: Settings, results: Queue[ProcessStats], slot: Slot) -> None:
    from confluent_kafka import Consumer

    from consumer.pipeline.message import Skip, decode
    from consumer.pipeline.save import OccurrencePipeline
    from consumer.storage.link_cache import LinkCache
    from consumer.storage.pool import create_pool
    from consumer.storage.redis_cache import RedisCache
    from consumer.storage.store import Storage
    from consumer.storage.string_id_cache import StringIdCache

    class NoCache(RedisCache):
        """Every lookup a miss, every write dropped, no network."""

        def get_many(self, cache: Any, keys: Sequence[str]) -> list[bytes | None] | None:
            return [None] * len(keys)

        def write(self, cache: Any, writes: Any) -> bool:
            return True

    storage = Storage(
        settings, create_pool(settings.database), RedisCache.from_settings(settings.redis)
    )
    none = NoCache(storage.redis.client, settings.redis.key_prefix)
    storage.strings = StringIdCache(none, ttl=settings.redis.indexer_ttl)
    storage.release_links = LinkCache(none, "release_link", settings.redis.link_cache_ttl)
    storage.environment_links = LinkCache(none, "environment_link", settings.redis.link_cache_ttl)
    saver = OccurrencePipeline(storage)
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": settings.kafka.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 1000,  # Sentry's ONCE_PER_SECOND
        }
    )
    slot.assign(consumer, settings.kafka.topic)
    stats = ProcessStats()
    slot.wait_for_the_others()
    idle_since = time.monotonic()
    while (
        stats.messages < settings.worker.batch_size
        and time.monotonic() - idle_since < settings.worker.exit_when_idle
    ):
        message = consumer.poll(0.2)
        if message is None or message.error() is not None:
            continue
        started = time.perf_counter()
        if stats.first_poll is None:
            stats.first_poll = time.time()
        job = decode(message.value())
        if not isinstance(job, Skip):
            saver.save([job])
        consumer.store_offsets(message)
        stats.last_commit = time.time()
        stats.batch_seconds.append(time.perf_counter() - started)
        stats.messages += 1
        idle_since = time.monotonic()
    consumer.close()  # commits the stored offsets
    storage.close()
    results.put(_finish(stats))


# ------------------------------------------------------------------------------ the harness


def _measure(
    kind: str,
    target: Callable[[Settings, Queue[ProcessStats], Slot], None],
    settings: Settings,
    processes: int,
    partitions: int,
) -> Measurement:
    context = multiprocessing.get_context("spawn")
    results: Queue[ProcessStats] = context.Queue()
    start = context.Barrier(processes)
    children = [
        context.Process(
            target=target,
            args=(settings, results, Slot(i, list(range(i, partitions, processes)), start)),
            name=f"{kind}-{i}",
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    stats: list[ProcessStats] = []
    while len(stats) < len(children):
        try:
            stats.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [c for c in children if c.exitcode is not None and c.exitcode != 0]
            if dead:
                raise RuntimeError(
                    f"bench: {dead[0].name} died with exit code {dead[0].exitcode}"
                ) from None
    for child in children:
        child.join(60)
    return combine(kind, stats)


def _fresh_database(server_url: str, name: str) -> str:
    import psycopg

    from consumer.storage.migrate import migrate

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {LIMIT_TABLE} (LIKE nodestore_node INCLUDING ALL)")
    return url


def _drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class BenchOptions:
    events: int = 100_000
    partitions: int = 2
    processes: int = 1
    runs: int = 3
    projects: int = 4
    per_event_events: int = 10_000
    measurements: tuple[str, ...] = MEASUREMENTS
    output: Path | None = None


def run_bench(
    settings: Settings, options: BenchOptions, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Pre-load once, measure each kind `runs` times, print the table, return (and write) JSON.
    The topic is deleted at the end."""
    from consumer.loadgen.produce import produce_occurrences
    from consumer.loadgen.sdk import event_stream

    if options.processes > options.partitions:
        raise ConfigurationError(
            f"bench: {options.processes} processes need at least as many partitions "
            f"(--partitions {options.partitions}): a process without one would measure nothing"
        )
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-{run_id}"
    server_url = settings.database.url.reveal().rsplit("/", 1)[0] + "/postgres"
    create_topic(settings, topic, options.partitions)
    try:
        say(
            f"bench: pre-loading {options.events} events into {topic} "
            f"({options.partitions} partitions)"
        )
        project_ids = list(range(1, options.projects + 1))
        report = produce_occurrences(
            settings.kafka.client_config(),
            topic,
            event_stream(),
            count=options.events,
            project_ids=project_ids,
        )
        say(f"bench: pre-loaded in {report.seconds:.1f}s")
        results = _measure_all(settings, options, run_id, topic, server_url, project_ids, say)
    finally:
        _delete_topic(settings, topic, say)  # 100,000 events: about 0.8 GB of broker log
    summary = _summarize(results, options)
    say(_table(summary))
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps(summary, indent=2))
        say(f"bench: written to {options.output}")
    return summary


def _measure_all(
    settings: Settings,
    options: BenchOptions,
    run_id: str,
    topic: str,
    server_url: str,
    project_ids: list[int],
    say: Callable[[str], None],
) -> dict[str, list[Measurement]]:
    import psycopg

    from consumer.storage.admin import create_organization, create_project

    results: dict[str, list[Measurement]] = {kind: [] for kind in options.measurements}
    for run in range(options.runs):
        for kind in options.measurements:
            database = f"bench_{run_id}_{kind}_{run}"
            url = _fresh_database(server_url, database)
            with psycopg.connect(url, autocommit=True) as conn:
                org_id = create_organization(conn, "bench")
                for project_id in project_ids:
                    create_project(conn, org_id, f"bench-{project_id}", project_id=project_id)
            measured = _settings_for(
                settings, kind, url, topic, f"bench-{run_id}-{kind}-{run}", options
            )
            target = {"limit": _limit_process, "per_event": _per_event_process}.get(
                kind, _worker_process
            )
            measurement = _measure(kind, target, measured, options.processes, options.partitions)
            results[kind].append(measurement)
            say(
                f"bench: run {run + 1}/{options.runs} {kind:9} {measurement.events_per_second:>10,.0f} events/s "
                f"({measurement.events} events in {measurement.seconds:.1f}s)"
            )
            _drop_database(server_url, database)
    return results


def _settings_for(
    settings: Settings, kind: str, url: str, topic: str, group: str, options: BenchOptions
) -> Settings:
    from consumer.settings import SecretUrl

    worker = dataclasses.replace(settings.worker, exit_when_idle=3.0, metrics_port=0)
    redis = settings.redis
    redis = dataclasses.replace(redis, key_prefix=f"{group}:")
    if kind == "per_event":
        # The per-event loop reads `batch_size` as the number of messages to read.
        worker = dataclasses.replace(
            worker, batch_size=max(1, options.per_event_events // options.processes)
        )
    kafka = dataclasses.replace(
        settings.kafka, topic=topic, group_id=group, dlq_topic=f"{topic}-dlq"
    )
    database = dataclasses.replace(settings.database, url=SecretUrl(url))
    return dataclasses.replace(settings, worker=worker, kafka=kafka, database=database, redis=redis)


def _summarize(results: Mapping[str, list[Measurement]], options: BenchOptions) -> dict[str, Any]:
    medians: dict[str, dict[str, Any]] = {}
    for kind, runs in results.items():
        if not runs:
            continue
        medians[kind] = {
            "events_per_second": statistics.median(m.events_per_second for m in runs),
            "batch_p50_ms": statistics.median(m.batch_p50_ms for m in runs),
            "batch_p99_ms": statistics.median(m.batch_p99_ms for m in runs),
            # every process's peak: the measured processes' and their Relay processes'
            "max_rss_mb": max(max(m.max_rss_mb + m.child_max_rss_mb, default=0.0) for m in runs),
            "cpu_us_per_event": statistics.median(m.cpu_us_per_event for m in runs),
            "runs": [dataclasses.asdict(m) for m in runs],
        }
    ratios = {}
    worker = medians.get("worker", {}).get("events_per_second")
    for kind in ("limit", "per_event"):
        base = medians.get(kind, {}).get("events_per_second")
        if worker and base:
            ratios[f"worker/{kind}"] = round(worker / base, 3)
    return {
        "options": {k: str(v) for k, v in dataclasses.asdict(options).items()},
        # what every process of the run decided, from the same files and environment
        "medians": medians,
        "ratios": ratios,
    }


def _table(summary: Mapping[str, Any]) -> str:
    lines = [
        f"{'measurement':12} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'peak RSS MB':>12} {'CPU µs/event':>13}",
    ]
    for kind, row in summary["medians"].items():
        lines.append(
            f"{kind:12} {row['events_per_second']:>10,.0f} {row['batch_p50_ms']:>8.1f} {row['batch_p99_ms']:>8.1f} "
            f"{row['max_rss_mb']:>12.0f} {row['cpu_us_per_event']:>13.0f}"
        )
    for name, value in summary["ratios"].items():
        lines.append(f"{name}: {value:.2f}")
    return "\n".join(lines)


def _delete_topic(settings: Settings, topic: str, say: Callable[[str], None] = print) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    for future in admin.delete_topics([topic]).values():
        try:
            future.result(timeout=30)
        except Exception as error:  # noqa: BLE001 - a leftover topic is not worth failing for
            say(f"bench: could not delete topic {topic}: {error}")
