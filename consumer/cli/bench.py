"""`consumer bench`: the worker against the limit and a per-event loop, on this host."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from consumer.cli.common import settings_for


def register(commands: Any) -> None:
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


def cmd_bench(args: argparse.Namespace) -> int:
    from consumer.bench.worker import MEASUREMENTS, BenchOptions, run_bench

    overrides = {"worker": {"batch_size": args.batch_size, "batch_time_ms": args.batch_time_ms}}
    settings = settings_for(args, overrides)
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
