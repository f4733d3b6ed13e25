"""The worker's exceptions, one rule per branch.

    ConsumerError
    ├── ConfigurationError      bad settings: refuse to start, exit code 2, say which setting
    ├── BadMessage              one message's data is wrong: dead-letter it with `reason`, go on
    │                           (raised only before batching; the save step never raises it)
    ├── TransientError          infrastructure unavailable (PostgreSQL, Redis, Kafka): retry the
    │                           whole batch with backoff, commit nothing meanwhile; past the
    │                           retry deadline it becomes fatal and the worker exits non-zero
    │   └── StaleCache          PostgreSQL refused a write made with ids a Redis cache gave:
    │                           drop the batch's cache entries and save it again at once from
    │                           PostgreSQL alone (Redis can never make PostgreSQL refuse a batch)
    ├── FatalError              the worker cannot go on safely (dead-letter guard tripped,
    │                           retry deadline passed): stop without committing, exit non-zero
    ├── Abandoned               a batch given up because the worker is stopping: nothing of it
    │                           is committed, the next owner of the partition saves it
    ├── AdminError              an administration command cannot be carried out as asked
    │                           (`consumer orgs|projects ...`): exit 1, say why
    └── InvalidCacheEntry       a cached value that is not what its cache writes: a miss, read
                                from PostgreSQL and written again

Anything else is a bug: it propagates, arroyo terminates the strategy without committing, and
the worker exits non-zero so its supervisor restarts it from the last committed offset.
"""

from __future__ import annotations


class ConsumerError(Exception):
    """Base of every exception the worker raises on purpose."""


class ConfigurationError(ConsumerError):
    """The settings cannot work; the message names the setting."""


class BadMessage(ConsumerError):
    """A message that can never be saved. `reason` is a short stable slug used as a metric label
    and as the dead letter's `reason` header; `detail` is for humans."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TransientError(ConsumerError):
    """A dependency is unavailable; retrying the same batch later may succeed."""


class StaleCache(TransientError):
    """A write failed on ids a cache gave (their rows are gone from PostgreSQL)."""


class FatalError(ConsumerError):
    """The worker must stop; committing would be wrong and retrying will not help."""


class Abandoned(ConsumerError):
    """The batch was given up because the worker is stopping; nothing of it is committed."""


class AdminError(ConsumerError):
    """An administration request cannot be carried out as asked (the message says why)."""


class InvalidCacheEntry(ConsumerError):
    """A cached value that is not what the cache writes (a row, a pointer, an id)."""
