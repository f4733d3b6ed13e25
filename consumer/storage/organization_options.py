"""Organization options (`sentry_organizationoptions`, Sentry's OrganizationOption): JSON text
values per organization and key.

The worker reads them only for batches that hold an occurrence of an unreleased group type, to
know whether the organization has that type's ingest feature (`group_types.py`); one query per
such batch, uncached, so that a feature switched on or off takes effect on the next batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from psycopg import Connection

MAX_KEY_LENGTH = 64  # sentry_organizationoptions.key varchar(64)

_SELECT = """SELECT organization_id, key, value FROM sentry_organizationoptions
             WHERE organization_id = ANY(%s::bigint[]) AND key = ANY(%s::text[])"""
_UPSERT = """
INSERT INTO sentry_organizationoptions (organization_id, key, value) VALUES (%s, %s, %s)
ON CONFLICT (organization_id, key) DO UPDATE SET value = EXCLUDED.value
"""
_DELETE = "DELETE FROM sentry_organizationoptions WHERE organization_id = %s AND key = %s"

logger = logging.getLogger(__name__)


def get_many(
    conn: Connection[Any], organization_ids: Iterable[int], keys: Iterable[str]
) -> dict[int, dict[str, Any]]:
    """`{organization_id: {key: value}}` for the options asked that exist."""
    ids, wanted = list(dict.fromkeys(organization_ids)), list(dict.fromkeys(keys))
    result: dict[int, dict[str, Any]] = {}
    if not ids or not wanted:
        return result
    for owner, key, value in conn.execute(_SELECT, (ids, wanted)).fetchall():
        try:
            result.setdefault(int(owner), {})[str(key)] = orjson.loads(value)
        except orjson.JSONDecodeError:
            logger.warning("organization %s option %r is not JSON; ignored", owner, key)
    return result


def set_option(conn: Connection[Any], organization_id: int, key: str, value: Any) -> None:
    """Store one option as JSON text (None deletes it)."""
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"option key longer than {MAX_KEY_LENGTH} characters: {key!r}")
    if value is None:
        conn.execute(_DELETE, (organization_id, key))
    else:
        conn.execute(_UPSERT, (organization_id, key, orjson.dumps(value).decode()))
