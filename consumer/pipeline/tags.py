"""Tags on an event, with Sentry's helpers and their exact semantics (reference §2.11).

Tags live in `data["tags"]` as a list of `[key, value]` pairs (Relay emits lists; entries may be
None). `set_tag` removes every pair of that key and appends the new one at the end, trimmed to
200 characters; a None value only removes. `get_tag` returns the first value of a key.
"""

from __future__ import annotations

from typing import Any

MAX_TAG_VALUE_LENGTH = 200
ELLIPSIS = "..."


def truncatechars(value: str, length: int) -> str:
    """Sentry's `truncatechars`: longer than `length` keeps `length - 3` characters and "..."."""
    if len(value) > length:
        return value[: max(0, length - len(ELLIPSIS))] + ELLIPSIS
    return value


def trim_tag_value(value: Any) -> Any:
    """Sentry's `trim(value, 200)` as `set_tag` applies it. Every caller here passes a string;
    anything else is returned as is (Sentry's structural trim of containers is not needed)."""
    if isinstance(value, str) and len(value) > MAX_TAG_VALUE_LENGTH:
        return truncatechars(value, MAX_TAG_VALUE_LENGTH)
    return value


def pop_tag(data: dict[str, Any], key: str) -> None:
    """Remove every pair with `key`; None entries stay. No-op when the event has no tags."""
    tags = data.get("tags")
    if not tags:
        return
    for pair in tags:
        if pair is not None and pair[0] == key:
            data["tags"] = [kv for kv in tags if kv is None or kv[0] != key]
            return


def set_tag(data: dict[str, Any], key: str, value: Any) -> None:
    tags = data.get("tags")
    if tags:
        for pair in tags:  # pop_tag, inlined: this runs a dozen times per event
            if pair is not None and pair[0] == key:
                tags = data["tags"] = [kv for kv in tags if kv is None or kv[0] != key]
                break
    if value is not None:
        if tags is None:
            tags = data["tags"] = []
        if type(value) is str and len(value) > MAX_TAG_VALUE_LENGTH:
            value = truncatechars(value, MAX_TAG_VALUE_LENGTH)
        tags.append([key, value])


def get_tag(data: dict[str, Any], key: str) -> Any:
    """The value of the first pair with `key` (None entries skipped), else None."""
    tags = data.get("tags")
    if not tags:
        return None
    for pair in tags:
        if pair is not None and pair[0] == key:
            return pair[1]
    return None
