"""`consumer migrate`: create or upgrade the database schema."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.cli.common import settings_for


def register(commands: Any) -> None:
    commands.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    from consumer.storage.migrate import migrate
    from consumer.storage.pool import conninfo

    settings = settings_for(args)
    applied = migrate(conninfo(settings.database))
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print("database schema is up to date")
    return 0
