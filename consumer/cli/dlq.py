"""`consumer dlq replay`: put replayable dead letters back on the input topic."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.cli.common import default, settings_for


def register(commands: Any) -> None:
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
        "--to",
        help="topic to replay to (default: the input topic, kafka.topic); letters from any "
        "topic go there",
    )
    dlq_replay.add_argument("--limit", type=int, help="stop after this many replays")
    dlq_replay.add_argument(
        "--dlq-topic", help=f"dead-letter topic (default {default('kafka', 'dlq_topic')})"
    )
    dlq_replay.add_argument(
        "--topic", help=f"input topic to replay to (default {default('kafka', 'topic')})"
    )
    dlq_replay.add_argument(
        "--group", help="consumer group of the worker (the replay uses <group>-dlq-replay)"
    )
    dlq_replay.set_defaults(func=cmd_dlq_replay)


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from consumer.replay import replay

    overrides = {
        "kafka": {"dlq_topic": args.dlq_topic, "topic": args.topic, "group_id": args.group}
    }
    settings = settings_for(args, overrides)
    report = replay(
        settings, reasons=args.reason, replay_all=args.all, to_topic=args.to, limit=args.limit
    )
    kept = ", ".join(
        f"{reason or '(none)'}: {count}" for reason, count in sorted(report.kept.items())
    )
    skipped = ", ".join(f"{why}: {count}" for why, count in sorted(report.skipped.items()))
    print(
        f"read {report.read} dead letters, replayed {report.replayed}"
        + (f"; left alone: {kept}" if kept else "")
        + (f"; could not replay: {skipped}" if skipped else "")
    )
    return 0
