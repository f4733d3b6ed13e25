"""Versioned schema migrations: `consumer migrate`.

Migrations are the SQL files `migrations/NNNN_name.sql`, applied in order, each in its own
transaction together with its row in `consumer_migrations`. A session-level advisory lock makes
concurrent runs (two deploys, a worker's init container) wait for each other instead of racing;
an applied migration is never applied again, so running `migrate` is always safe. The worker
never migrates on its own at start-up.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every process migrating this database.
MIGRATION_LOCK_KEY = 0x5E47C0_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found = []
    for entry in resources.files("consumer.storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def migrate(conninfo: str) -> list[Migration]:
    """Apply every migration not yet applied; return those applied now (empty when up to date)."""
    applied_now: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS consumer_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {row[0] for row in conn.execute("SELECT version FROM consumer_migrations")}
            for migration in available():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO consumer_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                logger.info("applied migration %04d_%s", migration.version, migration.name)
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


def applied_versions(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('consumer_migrations')").fetchone()
        if exists is None or exists[0] is None:
            return []
        return [
            row[0]
            for row in conn.execute("SELECT version FROM consumer_migrations ORDER BY version")
        ]
