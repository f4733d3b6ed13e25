"""The nodestore: Sentry's key/value store of event documents, on PostgreSQL (`nodestore_node`).

Format (reference §6, CONTRACT §4): a node's blob is the main document's JSON, then for each
extra subkey a newline, the subkey's name and another newline and its JSON. `data` holds
base64(zlib(blob)) as text; `timestamp` the write time. Documents written by Sentry itself
(sorted keys, ASCII-escaped, bare `NaN`) read back the same way.

Writes are idempotent upserts, last writer wins, and a whole batch costs one statement.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg_pool
from isal import isal_zlib

from consumer.storage.pool import connection, transaction

logger = logging.getLogger(__name__)

Document = dict[str, Any]


def event_node_id(project_id: int, event_id: str) -> str:
    """Sentry's node id of an event: md5 of "<project_id>:<event_id>" (reference §6.2)."""
    return hashlib.md5(f"{project_id}:{event_id}".encode(), usedforsecurity=False).hexdigest()


def occurrence_node_id(occurrence_id: str, project_id: int) -> str:
    """Sentry's node id of an issue occurrence: "i-o:" + md5 of "<occurrence_id>::<project_id>"."""
    digest = hashlib.md5(
        f"{occurrence_id}::{project_id}".encode(), usedforsecurity=False
    ).hexdigest()
    return f"i-o:{digest}"


def dumps(document: Any) -> bytes:
    """Compact JSON, UTF-8. Never contains a raw newline, so a blob's lines stay separable."""
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)


@dataclass(frozen=True, slots=True)
class Compression:
    """How blobs are compressed. Both codecs write the zlib format (RFC 1950), which Sentry's
    nodestore (and anything with zlib) reads: `isal` (Intel ISA-L, levels 0 to 3) is several
    times faster than `zlib` (levels -1 to 9) at a similar ratio, so it is the default."""

    codec: str = "isal"
    level: int = 1

    def compress(self, blob: bytes) -> bytes:
        if self.codec == "isal":
            return bytes(isal_zlib.compress(blob, self.level))
        return zlib.compress(blob, self.level)


ZLIB_DEFAULT = Compression("zlib", 6)  # what Sentry writes


def encode_blob(
    main: Any, subkeys: Mapping[str, Any] | None = None, *, compression: Compression = Compression()
) -> str:
    """The `data` column's text for a node: base64(zlib-format(main JSON [+ subkey lines]))."""
    blob = dumps(main)
    if subkeys:
        parts = [blob]
        for name, document in subkeys.items():
            parts.append(name.encode("ascii"))
            parts.append(dumps(document))
        blob = b"\n".join(parts)
    return base64.b64encode(compression.compress(blob)).decode("ascii")


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        # Sentry writes NaN/Infinity as bare tokens (simplejson allow_nan); the stdlib reads them.
        import json

        return json.loads(line)


def decode_blob(data: str) -> tuple[Any, dict[str, Any]]:
    """Read a `data` column: (main document, {subkey: document}). Reads Sentry-written blobs."""
    blob = zlib.decompress(base64.b64decode(data))
    if not blob.startswith(b"{"):
        # Sentry treats a blob that is not JSON as a legacy pickle; we never unpickle.
        logger.warning("nodestore: blob is not JSON (legacy pickle?); returning an empty document")
        return {}, {}
    lines = blob.split(b"\n")
    main = _loads(lines[0])
    subkeys: dict[str, Any] = {}
    for index in range(1, len(lines) - 1, 2):
        subkeys[lines[index].decode("ascii")] = _loads(lines[index + 1])
    return main, subkeys


# A batch is copied into a session-local staging table, then upserted from it: COPY moves the
# rows in C, where passing them as array parameters runs Python dumpers over every value.
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS nodestore_incoming (id text, data text) ON COMMIT DELETE ROWS"
)
_COPY = "COPY nodestore_incoming (id, data) FROM STDIN"
# Up to this many rows go in one statement with their values inline.
SMALL_WRITE = 16
_INSERT_VALUES = (
    "INSERT INTO nodestore_node (id, data, timestamp) VALUES {values} "
    "ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, timestamp = EXCLUDED.timestamp"
)
_UPSERT = """
INSERT INTO nodestore_node (id, data, timestamp)
SELECT id, data, %(now)s FROM nodestore_incoming
ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, timestamp = EXCLUDED.timestamp
"""


class NodeStore:
    """Batched access to `nodestore_node` through a connection pool.

    Every method blocks on PostgreSQL; connection failures raise TransientError.
    """

    def __init__(
        self, pool: psycopg_pool.ConnectionPool, *, compression: Compression = Compression()
    ) -> None:
        self.pool = pool
        self.compression = compression

    def set_many_encoded(
        self, nodes: Iterable[tuple[str, str]], *, now: datetime | None = None
    ) -> int:
        """Upsert already-encoded nodes `(id, data)`; the last one of an id wins.

        A few rows (a quiet topic, one event) take one `INSERT ... VALUES` statement; more take
        three whatever their number (stage, COPY, upsert) in one transaction. Returns the number
        of distinct nodes written. The write is durable when this returns.
        """
        latest = dict(nodes)  # one row per id: ON CONFLICT cannot touch a row twice
        if not latest:
            return 0
        stamp = now or datetime.now(UTC)
        if len(latest) <= SMALL_WRITE:
            values = ", ".join(["(%s, %s, %s)"] * len(latest))
            params = [item for node_id, data in latest.items() for item in (node_id, data, stamp)]
            with connection(self.pool) as conn:
                conn.execute(_INSERT_VALUES.format(values=values), params, prepare=True)
            return len(latest)
        with transaction(self.pool) as conn:
            conn.execute(_STAGE)
            with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
                for row in latest.items():
                    copy.write_row(row)
            conn.execute(_UPSERT, {"now": stamp}, prepare=True)
        return len(latest)

    def set_many(self, documents: Mapping[str, Any], *, now: datetime | None = None) -> int:
        """Upsert `{node_id: main document}` in one statement."""
        return self.set_many_encoded(
            (
                (node_id, encode_blob(doc, compression=self.compression))
                for node_id, doc in documents.items()
            ),
            now=now,
        )

    def set(self, node_id: str, document: Any, subkeys: Mapping[str, Any] | None = None) -> None:
        self.set_many_encoded(
            [(node_id, encode_blob(document, subkeys, compression=self.compression))]
        )

    def get(self, node_id: str, subkey: str | None = None) -> Any:
        """The main document (or a subkey's document), None when absent."""
        return self.get_multi([node_id], subkey).get(node_id)

    def get_multi(self, node_ids: Sequence[str], subkey: str | None = None) -> dict[str, Any]:
        """`{id: document}` for the ids that exist, in one query."""
        if not node_ids:
            return {}
        with connection(self.pool) as conn:
            rows = conn.execute(
                "SELECT id, data FROM nodestore_node WHERE id = ANY(%s)", (list(node_ids),)
            ).fetchall()
        result: dict[str, Any] = {}
        for node_id, data in rows:
            assert isinstance(node_id, str)
            assert isinstance(data, str)
            main, subkeys = decode_blob(data)
            result[node_id] = main if subkey is None else subkeys.get(subkey)
        return result

    def delete(self, node_id: str) -> None:
        self.delete_multi([node_id])

    def delete_multi(self, node_ids: Sequence[str]) -> int:
        if not node_ids:
            return 0
        with connection(self.pool) as conn:
            cursor = conn.execute(
                "DELETE FROM nodestore_node WHERE id = ANY(%s)", (list(node_ids),)
            )
            return cursor.rowcount

    def cleanup(self, older_than: timedelta | datetime) -> int:
        """Delete nodes written before a cut-off (a datetime, or an age from now)."""
        with connection(self.pool) as conn:
            if isinstance(older_than, timedelta):
                cursor = conn.execute(
                    "DELETE FROM nodestore_node WHERE timestamp < now() - %s", (older_than,)
                )
            else:
                cursor = conn.execute(
                    "DELETE FROM nodestore_node WHERE timestamp < %s", (older_than,)
                )
            return cursor.rowcount
