"""Tags on an event, with Sentry's helpers and their exact semantics (reference §2.11).

Tags live in `data["tags"]` as a list of `[key, value]` pairs (Relay emits lists; entries may be
None). Setting a tag removes every pair of that key and appends the new one at the end, trimmed
to 200 characters; a None value only removes. Getting a tag returns the first value of a key.

`EventTags` edits that list in place for the steps of one event, with the set of its keys beside
it: setting a tag the event does not have yet, the usual case, appends without reading the list,
and only a key already present costs a pass over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_TAG_VALUE_LENGTH = 200
ELLIPSIS = "..."


def truncatechars(value: str, length: int) -> str:
    """Sentry's `truncatechars`: longer than `length` keeps `length - 3` characters and "..."."""
    if len(value) > length:
        return value[: max(0, length - len(ELLIPSIS))] + ELLIPSIS
    return value


class EventTags:
    """Sentry's `set_tag`, `get_tag` and tag removal over one event's tag list.

    `pairs` is the event's own list (`data["tags"]`), changed in place, so the event always
    shows the tags as they are; while an `EventTags` is in use nothing else may change that list.
    """

    __slots__ = ("keys", "pairs")

    def __init__(self, pairs: list[Any]) -> None:
        self.pairs = pairs
        self.keys = {pair[0] for pair in pairs if pair is not None}

    def _remove(self, key: str) -> None:
        self.pairs[:] = [pair for pair in self.pairs if pair is None or pair[0] != key]
        self.keys.discard(key)

    def set(self, key: str, value: Any) -> None:
        """Remove every pair of `key`, then append `[key, value]` unless `value` is None."""
        if key in self.keys:
            self._remove(key)
        if value is not None:
            self._append(key, value)

    def _append(self, key: str, value: Any) -> None:
        if type(value) is str and len(value) > MAX_TAG_VALUE_LENGTH:
            # Sentry's `trim(value, 200)`; every value set here is a string (its structural trim
            # of containers is not needed)
            value = truncatechars(value, MAX_TAG_VALUE_LENGTH)
        self.pairs.append([key, value])
        self.keys.add(key)

    def set_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """`set` of each (key, value) in turn: the last value of each key counts, in the order
        of those last values."""
        latest = dict(items)
        if len(latest) < len(items):  # a key set again moves after the keys set since
            latest = {}
            for key, value in items:
                latest.pop(key, None)
                latest[key] = value
        self.update(latest)

    def update(self, values: dict[str, Any]) -> None:
        """`set` of each key of `values` in its order, with one pass over the list for all the
        keys it already has."""
        keys = self.keys
        pairs = self.pairs
        if not keys.isdisjoint(values):
            pairs[:] = [pair for pair in pairs if pair is None or pair[0] not in values]
            keys.difference_update(values)
        for key, value in values.items():
            if value is not None:
                self._append(key, value)

    def pop(self, key: str) -> None:
        """Remove every pair of `key` (None entries stay)."""
        if key in self.keys:
            self._remove(key)

    def get(self, key: str) -> Any:
        """The value of the first pair of `key` (None entries skipped), else None."""
        if key in self.keys:
            for pair in self.pairs:
                if pair is not None and pair[0] == key:
                    return pair[1]
        return None
