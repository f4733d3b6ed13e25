"""`consumer produce`: realistic occurrences onto a topic (sentry-sdk events or event files)."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.cli.common import settings_for
from consumer.errors import ConfigurationError


def register(commands: Any) -> None:
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


def cmd_produce(args: argparse.Namespace) -> int:
    """Produce realistic occurrences; exit 1 when the broker did not take them all."""
    import signal
    import threading

    from consumer.loadgen.produce import produce_occurrences
    from consumer.loadgen.progress import Progress

    settings = settings_for(args)
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
