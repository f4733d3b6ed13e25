"""The `consumer` command (also `python -m consumer`): wiring only.

consumer migrate
consumer run [--batch-size N] [--batch-time-ms MS] [--processes N] [--topic T] [--group G]
             [--metrics-port P] [--exit-when-idle SECONDS]
consumer orgs create SLUG [--name NAME] [--id ID]
consumer orgs delete SLUG
consumer orgs set-option SLUG KEY JSON_VALUE | --unset
consumer projects create ORG_SLUG SLUG [--name NAME] [--id ID]
consumer projects delete PROJECT_ID
consumer projects set-option PROJECT_ID KEY JSON_VALUE | --unset
consumer produce [--count N] [--rate R] [--events DIR] [--project-id ID ...]
                 [--create-projects N --orgs M] [--bad-ratio R]
consumer dlq replay [--reason R ...] [--all] [--to TOPIC] [--limit N]
consumer bench [--events N] [--processes N] [--runs N]
consumer demo
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consumer.errors import ConfigurationError
from consumer.settings import Settings, load_settings

logger = logging.getLogger("consumer")


def _settings(
    args: argparse.Namespace, overrides: dict[str, dict[str, Any]] | None = None
) -> Settings:
    settings = load_settings(config_file=args.config, overrides=overrides or {})
    logging.getLogger().setLevel((args.log_level or settings.worker.log_level).upper())
    return settings


def cmd_migrate(args: argparse.Namespace) -> int:
    from consumer.storage.migrate import migrate
    from consumer.storage.pool import conninfo

    settings = _settings(args)
    applied = migrate(conninfo(settings.database))
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print("database schema is up to date")
    return 0


def _run_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "worker": {
            "batch_size": args.batch_size,
            "batch_time_ms": args.batch_time_ms,
            "processes": args.processes,
            "metrics_port": args.metrics_port,
            "exit_when_idle": args.exit_when_idle,
        },
        "kafka": {"topic": args.topic, "group_id": args.group, "dlq_topic": args.dlq_topic},
    }


def cmd_run(args: argparse.Namespace) -> int:
    from consumer import endpoint
    from consumer.supervisor import liveness_max_age, supervise
    from consumer.worker import run_worker

    settings = _settings(args, _run_overrides(args))
    logger.info(
        "starting: topic=%s group=%s batch=%d/%dms kafka=%s db=%s redis=%s",
        settings.kafka.topic,
        settings.kafka.group_id,
        settings.worker.batch_size,
        settings.worker.batch_time_ms,
        settings.kafka.bootstrap_servers,
        settings.database.url,
        settings.redis.url,
    )
    if settings.worker.processes > 1:
        return supervise(settings)
    liveness = Path(settings.worker.healthcheck_file or endpoint.default_liveness_path())
    endpoint.serve(
        settings.worker.metrics_host,
        settings.worker.metrics_port,
        lambda: [liveness],
        liveness_max_age(settings),
    )
    return run_worker(settings, liveness_path=liveness)


def cmd_orgs_create(args: argparse.Namespace) -> int:
    import psycopg

    from consumer.storage.admin import AdminError, create_organization
    from consumer.storage.pool import conninfo

    settings = _settings(args)
    with psycopg.connect(conninfo(settings.database)) as conn:
        try:
            org_id = create_organization(conn, args.slug, args.name, args.id)
        except AdminError as error:
            print(f"consumer: {error}", file=sys.stderr)
            return 1
    print(org_id)
    return 0


def cmd_projects_create(args: argparse.Namespace) -> int:
    import psycopg

    from consumer.storage.admin import AdminError, create_project
    from consumer.storage.pool import conninfo

    settings = _settings(args)
    with psycopg.connect(conninfo(settings.database)) as conn:
        row = conn.execute(
            "SELECT id FROM sentry_organization WHERE slug = %s AND date_deleted IS NULL",
            (args.org,),
        ).fetchone()
        if row is None:
            raise ConfigurationError(f"no organization with slug {args.org!r}")
        try:
            project_id = create_project(conn, row[0], args.slug, args.name, args.id)
        except AdminError as error:
            print(f"consumer: {error}", file=sys.stderr)
            return 1
    print(project_id)
    return 0


def _report_eviction(evicted: bool, settings: Settings) -> None:
    if not evicted:
        print(
            "consumer: warning: Redis unreachable, cached entries were not evicted; "
            f"they expire within {settings.redis.model_cache_ttl}s",
            file=sys.stderr,
        )


def _soft_delete(args: argparse.Namespace, kind: str, delete: Any, missing: str) -> int:
    """`orgs delete` and `projects delete`: `delete(storage)` marks the row deleted and evicts
    its cache entries; says which row it was, or that there was none."""
    from consumer.storage.store import Storage

    settings = _settings(args)
    storage = Storage.open(settings)
    try:
        changed = delete(storage)
    finally:
        storage.close()
    if changed is None:
        print(f"consumer: no {kind} with {missing}", file=sys.stderr)
        return 1
    _report_eviction(changed.evicted, settings)
    print(f"{kind} {changed.row.id} deleted at {changed.row.date_deleted}")
    return 0


def cmd_orgs_delete(args: argparse.Namespace) -> int:
    from consumer.storage.admin import delete_organization

    return _soft_delete(
        args,
        "organization",
        lambda storage: delete_organization(storage, args.slug),
        f"slug {args.slug!r}",
    )


def cmd_projects_delete(args: argparse.Namespace) -> int:
    from consumer.storage.admin import delete_project

    return _soft_delete(
        args,
        "project",
        lambda storage: delete_project(storage, args.project_id),
        f"id {args.project_id}",
    )


def cmd_orgs_set_option(args: argparse.Namespace) -> int:
    import json

    from consumer.storage.admin import AdminError, set_organization_option
    from consumer.storage.store import Storage

    if args.unset == (args.value is not None):
        raise ConfigurationError("give either a JSON value or --unset")
    try:
        value = None if args.value is None else json.loads(args.value)
    except ValueError:
        raise ConfigurationError("option value must be JSON (true, 3, '\"text\"')") from None
    storage = Storage.open(_settings(args))
    try:
        set_organization_option(storage, args.slug, args.key, value)
    except AdminError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    return 0


def cmd_projects_set_option(args: argparse.Namespace) -> int:
    import json

    from consumer.storage.admin import AdminError, set_project_option
    from consumer.storage.store import Storage

    if args.unset == (args.value is not None):
        raise ConfigurationError("give either a JSON value or --unset")
    value = None
    if args.value is not None:
        try:
            value = json.loads(args.value)
        except ValueError:
            raise ConfigurationError(
                f"option value must be JSON (a string is quoted: '\"{args.value}\"')"
            ) from None
    settings = _settings(args)
    storage = Storage.open(settings)
    try:
        evicted = set_project_option(storage, args.project_id, args.key, value)
    except AdminError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    _report_eviction(evicted, settings)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """Produce realistic occurrences; exit 1 when the broker did not take them all."""
    import signal
    import threading

    from consumer.loadgen.produce import produce_occurrences
    from consumer.loadgen.progress import Progress

    settings = _settings(args)
    if args.count < 0 or args.rate < 0 or not 0 <= args.bad_ratio <= 1:
        raise ConfigurationError("--count and --rate must not be negative, --bad-ratio in [0, 1]")
    project_ids = list(args.project_id or [])
    if args.create_projects:
        import psycopg

        from consumer.loadgen.projects import ensure_projects
        from consumer.storage.pool import conninfo

        with psycopg.connect(conninfo(settings.database)) as conn:
            project_ids += ensure_projects(
                conn, organizations=args.orgs, projects=args.create_projects
            )
    if args.events:
        from consumer.loadgen.files import folder_stream

        events = folder_stream(args.events, seed=args.seed)
    else:
        from consumer.loadgen.sdk import event_stream

        events = event_stream(seed=args.seed)
    count = args.count or None  # 0: until interrupted
    topic = args.topic or settings.kafka.topic
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        report = produce_occurrences(
            settings.kafka.client_config(),
            topic,
            events,
            count=count,
            project_ids=project_ids or [1],
            rate=args.rate,
            seed=args.seed,
            bad_ratio=args.bad_ratio,
            progress=Progress(count),
            stop=stop,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(report.kinds.items()))
    print(
        f"produced {report.sent} messages to {topic} ({report.failed} failed) in "
        f"{report.seconds:.1f}s for projects {sorted(set(project_ids or [1]))}: {kinds}"
    )
    return 0 if report.failed == 0 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Migrate, create an organization and a project, produce SDK events, run until idle."""
    import dataclasses

    import psycopg

    from consumer import metrics
    from consumer.bench.worker import RunClock
    from consumer.loadgen.produce import produce_occurrences
    from consumer.loadgen.sdk import event_stream
    from consumer.storage.admin import create_organization, create_project
    from consumer.storage.migrate import migrate
    from consumer.storage.pool import conninfo
    from consumer.worker import Worker, committed_offsets

    settings = _settings(args)
    run_id = time.strftime("%Y%m%d%H%M%S")
    topic = f"demo-occurrences-{run_id}"
    group = f"demo-{run_id}"
    settings = dataclasses.replace(
        settings,
        kafka=dataclasses.replace(
            settings.kafka, topic=topic, group_id=group, dlq_topic=f"{topic}-dlq"
        ),
        worker=dataclasses.replace(settings.worker, exit_when_idle=3.0),
    )
    info = conninfo(settings.database)
    migrate(info)
    with psycopg.connect(info) as conn:
        org_id = create_organization(conn, "demo", "Demo Organization")
        project_id = create_project(conn, org_id, "demo-backend", "Demo Backend")
    print(f"demo: organization demo ({org_id}), project demo-backend ({project_id})")
    _create_topic(settings, topic, partitions=4)
    report = produce_occurrences(
        settings.kafka.client_config(),
        topic,
        event_stream(),
        count=args.count,
        project_ids=[project_id],
    )
    print(f"demo: produced {report.sent} occurrences from sentry-sdk events to {topic}")
    from consumer import endpoint

    liveness = endpoint.default_liveness_path()
    endpoint.serve(
        settings.worker.metrics_host, settings.worker.metrics_port, lambda: [liveness], 60.0
    )
    clock = RunClock()
    worker = Worker(
        settings,
        wrap_saver=clock.wrap_saver,
        wrap_commit=clock.wrap_commit,
        liveness_path=liveness,
    )
    worker.install_signal_handlers()
    code = worker.run()
    elapsed = clock.seconds
    saved = int(metrics.total(metrics.MESSAGES, outcome="saved"))
    dead = int(metrics.total(metrics.MESSAGES, outcome="dead_lettered"))
    offsets = committed_offsets(settings, topic, group)
    print(
        f"demo: saved {saved} events ({dead} dead-lettered) in {elapsed:.1f}s from the first batch "
        f"to the last commit: {saved / max(elapsed, 1e-6):,.0f} events/s"
    )
    print(f"demo: committed offsets {dict(sorted(offsets.items()))}")
    print(f"demo: metrics were served on http://127.0.0.1:{settings.worker.metrics_port}/metrics")
    return code


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from consumer.replay import replay

    overrides = {
        "kafka": {"dlq_topic": args.dlq_topic, "topic": args.topic, "group_id": args.group}
    }
    settings = _settings(args, overrides)
    report = replay(
        settings, reasons=args.reason, replay_all=args.all, to_topic=args.to, limit=args.limit
    )
    kept = ", ".join(
        f"{reason or '(none)'}: {count}" for reason, count in sorted(report.kept.items())
    )
    print(
        f"read {report.read} dead letters, replayed {report.replayed}"
        + (f"; left alone: {kept}" if kept else "")
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from consumer.bench.worker import MEASUREMENTS, BenchOptions, run_bench

    overrides = {"worker": {"batch_size": args.batch_size, "batch_time_ms": args.batch_time_ms}}
    settings = _settings(args, overrides)
    options = BenchOptions(
        events=args.events,
        partitions=args.partitions,
        processes=args.processes,
        runs=args.runs,
        per_event_events=args.per_event_events,
        measurements=tuple(args.only or MEASUREMENTS),
        output=Path(args.output) if args.output else None,
    )
    run_bench(settings, options)
    return 0


def _create_topic(settings: Settings, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(settings.kafka.client_config())
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    for future in futures.values():
        future.result(timeout=30)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consumer", description="Sentry generic-events consumer worker."
    )
    parser.add_argument(
        "--config", help="settings file (TOML); default $CONSUMER_CONFIG or config/consumer.toml"
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING (default: worker.log_level)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    run = commands.add_parser("run", help="consume, save and commit until stopped")
    run.add_argument("--batch-size", type=int, help="messages per batch (default 1000)")
    run.add_argument("--batch-time-ms", type=int, help="longest wait to fill a batch (default 200)")
    run.add_argument(
        "--processes", type=int, help="worker processes in the consumer group (default 1)"
    )
    run.add_argument("--topic", help="input topic (default ingest-occurrences)")
    run.add_argument("--dlq-topic", help="dead-letter topic (default ingest-occurrences-dlq)")
    run.add_argument("--group", help="consumer group (default ingest-occurrences)")
    run.add_argument("--metrics-port", type=int, help="Prometheus port, 0 disables (default 9100)")
    run.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="drain and exit once nothing arrived for SECONDS",
    )
    run.set_defaults(func=cmd_run)

    orgs = commands.add_parser("orgs", help="organizations").add_subparsers(
        dest="action", required=True
    )
    org_create = orgs.add_parser("create", help="create an organization, print its id")
    org_create.add_argument("slug")
    org_create.add_argument("--name")
    org_create.add_argument("--id", type=int)
    org_create.set_defaults(func=cmd_orgs_create)
    org_delete = orgs.add_parser("delete", help="soft-delete an organization")
    org_delete.add_argument("slug")
    org_delete.set_defaults(func=cmd_orgs_delete)
    org_option = orgs.add_parser(
        "set-option",
        help="set an organization option (an unreleased group type's ingest feature, such as "
        "'organizations:uptime-domain-failure-ingest' true)",
    )
    org_option.add_argument("slug")
    org_option.add_argument("key")
    org_option.add_argument("value", nargs="?", help="the value as JSON: true, 3, '\"text\"'")
    org_option.add_argument("--unset", action="store_true", help="remove the option")
    org_option.set_defaults(func=cmd_orgs_set_option)

    projects = commands.add_parser("projects", help="projects").add_subparsers(
        dest="action", required=True
    )
    project_create = projects.add_parser("create", help="create a project, print its id")
    project_create.add_argument("org", help="organization slug")
    project_create.add_argument("slug")
    project_create.add_argument("--name")
    project_create.add_argument("--id", type=int)
    project_create.set_defaults(func=cmd_projects_create)
    project_delete = projects.add_parser("delete", help="soft-delete a project")
    project_delete.add_argument("project_id", type=int)
    project_delete.set_defaults(func=cmd_projects_delete)
    project_option = projects.add_parser(
        "set-option", help="set a project option (plugin settings such as '<plugin>:enabled')"
    )
    project_option.add_argument("project_id", type=int)
    project_option.add_argument("key")
    project_option.add_argument("value", nargs="?", help="the value as JSON: true, 3, '\"text\"'")
    project_option.add_argument("--unset", action="store_true", help="remove the option")
    project_option.set_defaults(func=cmd_projects_set_option)

    produce = commands.add_parser(
        "produce",
        help="produce realistic occurrences (sentry-sdk events, or a folder of event files)",
    )
    produce.add_argument(
        "--count", type=int, default=1000, help="messages to send (0: until interrupted)"
    )
    produce.add_argument(
        "--rate", type=float, default=0.0, help="messages per second (0: unthrottled)"
    )
    produce.add_argument("--topic", help="default: kafka.topic")
    produce.add_argument(
        "--events",
        metavar="DIR",
        help="send the *.json event files of DIR (default: events captured from sentry-sdk); "
        "files that are not JSON objects are sent raw",
    )
    produce.add_argument(
        "--project-id", type=int, action="append", help="a project to send to (repeatable)"
    )
    produce.add_argument(
        "--create-projects",
        type=int,
        default=0,
        metavar="N",
        help="create (or reuse) N projects loadgen-1..N and send to them too",
    )
    produce.add_argument(
        "--orgs",
        type=int,
        default=1,
        metavar="M",
        help="spread the created projects over M organizations loadgen-org-1..M",
    )
    produce.add_argument(
        "--bad-ratio",
        type=float,
        default=0.0,
        help="share of bad messages: invalid JSON, schema violations, wrong types, unknown "
        "projects... (e.g. 0.05)",
    )
    produce.add_argument("--seed", type=int, default=0)
    produce.set_defaults(func=cmd_produce)

    dlq = commands.add_parser("dlq", help="the dead-letter topic").add_subparsers(
        dest="action", required=True
    )
    dlq_replay = dlq.add_parser(
        "replay", help="put replayable dead letters back on the input topic"
    )
    dlq_replay.add_argument(
        "--reason", action="append", help="replay dead letters with this reason (repeatable)"
    )
    dlq_replay.add_argument(
        "--all", action="store_true", help="replay every dead letter, whatever its reason"
    )
    dlq_replay.add_argument(
        "--to", help="topic to replay to (default: each letter's original topic)"
    )
    dlq_replay.add_argument("--limit", type=int, help="stop after this many replays")
    dlq_replay.add_argument(
        "--dlq-topic", help="dead-letter topic (default ingest-occurrences-dlq)"
    )
    dlq_replay.add_argument("--topic", help="input topic, when a letter does not name its own")
    dlq_replay.add_argument(
        "--group", help="consumer group of the worker (the replay uses <group>-dlq-replay)"
    )
    dlq_replay.set_defaults(func=cmd_dlq_replay)

    bench = commands.add_parser(
        "bench", help="measure the worker against the limit and per-event baselines"
    )
    bench.add_argument("--events", type=int, default=100_000)
    bench.add_argument("--partitions", type=int, default=2)
    bench.add_argument(
        "--processes", type=int, default=1, help="worker processes (and limit processes)"
    )
    bench.add_argument("--runs", type=int, default=3, help="repetitions; the table shows medians")
    bench.add_argument(
        "--per-event-events", type=int, default=10_000, help="messages the per-event baseline reads"
    )
    bench.add_argument("--batch-size", type=int)
    bench.add_argument("--batch-time-ms", type=int)
    bench.add_argument("--only", action="append", choices=["worker", "limit", "per_event"])
    bench.add_argument("--output", default="bench-results/latest.json", help="JSON report path")
    bench.set_defaults(func=cmd_bench)

    demo = commands.add_parser("demo", help="the whole job end to end on the local services")
    demo.add_argument("--count", type=int, default=5000)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("arroyo").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigurationError as error:
        print(f"consumer: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
