"""The `consumer` command (also `python -m consumer`): wiring only: one module per command group,
each with `register(commands)` (its flags) and its `cmd_*` functions; the work itself lives in
the package's other modules.

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
from collections.abc import Sequence

from consumer import redaction
from consumer.cli import admin, bench, demo, dlq, migrate, produce, run
from consumer.errors import ConfigurationError

COMMAND_GROUPS = (migrate, run, admin, produce, dlq, bench, demo)


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

    for group in COMMAND_GROUPS:
        group.register(commands)
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
        print(redaction.scrub(f"consumer: configuration error: {error}"), file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - what Python would print, without the secrets
        redaction.report_crash(error)
        return 1
