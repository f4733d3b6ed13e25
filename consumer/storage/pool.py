"""The PostgreSQL connection pool, with every timeout explicit.

* connect: `connect_timeout` (libpq) bounds opening a connection;
* checkout: `checkout_timeout` bounds waiting for a free connection (`PoolTimeout`);
* statements: `statement_timeout` is set on every connection, so a stuck query fails instead of
  holding a batch (and its offsets) forever.

Connections are in autocommit mode: `connection()` runs each statement as its own transaction
(as Django's autocommit does for Sentry), so a get-or-create commits, and releases its row locks,
before the next statement; `transaction()` groups statements explicitly.

Errors that mean "the database is not reachable right now" are mapped to TransientError by
`transient_errors()`, so callers retry the batch instead of dead-lettering its messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg import Connection

from consumer.errors import TransientError
from consumer.settings import DatabaseSettings

APPLICATION_NAME = "generic-events-consumer"


def conninfo(settings: DatabaseSettings) -> str:
    """The libpq connection string: the URL plus the timeouts and TLS settings."""
    extra = {
        "connect_timeout": str(max(1, round(settings.connect_timeout))),
        "application_name": APPLICATION_NAME,
        "options": f"-c statement_timeout={settings.statement_timeout_ms} -c timezone=UTC",
    }
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        value = getattr(settings, key)
        if value:
            extra[key] = value
    return psycopg.conninfo.make_conninfo(settings.url.reveal(), **extra)


def create_pool(
    settings: DatabaseSettings,
    *,
    name: str = "consumer",
    open_wait: bool = True,
    configure: Callable[[Connection[Any]], None] | None = None,
) -> psycopg_pool.ConnectionPool:
    """Open a pool of autocommit connections; with `open_wait` fail fast (TransientError) when
    the database is down. `configure` runs on every new connection (tests count statements)."""
    pool: psycopg_pool.ConnectionPool = psycopg_pool.ConnectionPool(
        conninfo(settings),
        kwargs={"autocommit": True},
        configure=configure,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.checkout_timeout,
        name=name,
        open=False,
        reconnect_timeout=settings.checkout_timeout * 6,
    )
    pool.open(wait=False)
    if open_wait:
        try:
            pool.wait(timeout=settings.connect_timeout + settings.checkout_timeout)
        except psycopg_pool.PoolTimeout as error:
            pool.close()
            raise TransientError(f"PostgreSQL not reachable at {settings.url}: {error}") from None
    return pool


@contextmanager
def transient_errors() -> Iterator[None]:
    """Re-raise connection-level failures as TransientError; data errors pass through."""
    try:
        yield
    except (
        psycopg.OperationalError,
        psycopg_pool.PoolTimeout,
        psycopg.errors.AdminShutdown,
    ) as error:
        raise TransientError(f"PostgreSQL: {type(error).__name__}: {error}") from error
    except psycopg.errors.SerializationFailure as error:
        raise TransientError(f"PostgreSQL: {error}") from error
    except psycopg.errors.DeadlockDetected as error:
        raise TransientError(f"PostgreSQL: {error}") from error
    except psycopg.errors.QueryCanceled as error:  # statement_timeout
        raise TransientError(f"PostgreSQL: {error}") from error


@contextmanager
def connection(pool: psycopg_pool.ConnectionPool) -> Iterator[Connection[tuple[object, ...]]]:
    """A pooled autocommit connection: every statement commits on its own."""
    with transient_errors(), pool.connection() as conn:
        yield conn


@contextmanager
def transaction(pool: psycopg_pool.ConnectionPool) -> Iterator[Connection[tuple[object, ...]]]:
    """A pooled connection inside one transaction, committed on success, rolled back on error."""
    with transient_errors(), pool.connection() as conn, conn.transaction():
        yield conn
