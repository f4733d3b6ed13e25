"""`consumer demo`: the whole job end to end on the local services."""

from __future__ import annotations

import argparse
import time
from typing import Any

from consumer.cli.common import settings_for


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="the whole job end to end on the local services")
    demo.add_argument("--count", type=int, default=5000)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Migrate, create an organization and a project, produce SDK events, run until idle."""
    import dataclasses

    import psycopg

    from consumer import metrics
    from consumer.bench.worker import RunClock
    from consumer.kafka_admin import committed_offsets, create_topic
    from consumer.loadgen.produce import produce_occurrences
    from consumer.loadgen.sdk import event_stream
    from consumer.storage.admin import create_organization, create_project
    from consumer.storage.migrate import migrate
    from consumer.storage.pool import conninfo
    from consumer.worker import Worker

    settings = settings_for(args)
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
    create_topic(settings, topic, partitions=4)
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
        wrap_pipeline=clock.wrap_pipeline,
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
