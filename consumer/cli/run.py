"""`consumer run`: consume, save and commit until stopped (one worker, or N under a supervisor)."""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path
from typing import Any

from consumer.cli.common import default, settings_for

logger = logging.getLogger("consumer")


def register(commands: Any) -> None:
    run = commands.add_parser("run", help="consume, save and commit until stopped")
    worker, kafka = partial(default, "worker"), partial(default, "kafka")
    run.add_argument(
        "--batch-size", type=int, help=f"messages per batch (default {worker('batch_size')})"
    )
    run.add_argument(
        "--batch-time-ms",
        type=int,
        help=f"longest wait to fill a batch (default {worker('batch_time_ms')})",
    )
    run.add_argument(
        "--processes",
        type=int,
        help=f"worker processes in the consumer group (default {worker('processes')})",
    )
    run.add_argument("--topic", help=f"input topic (default {kafka('topic')})")
    run.add_argument("--dlq-topic", help=f"dead-letter topic (default {kafka('dlq_topic')})")
    run.add_argument("--group", help=f"consumer group (default {kafka('group_id')})")
    run.add_argument(
        "--metrics-port",
        type=int,
        help=f"Prometheus port, 0 disables (default {worker('metrics_port')})",
    )
    run.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="drain and exit once nothing arrived for SECONDS "
        f"(default {worker('exit_when_idle')}: never)",
    )
    run.set_defaults(func=cmd_run)


def run_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
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

    settings = settings_for(args, run_overrides(args))
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
