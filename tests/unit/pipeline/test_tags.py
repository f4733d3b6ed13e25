"""Sentry's tag helpers, exactly (reference §2.11)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.tags import EventTags, truncatechars


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        ("short", 200, "short"),
        ("x" * 200, 200, "x" * 200),
        ("x" * 201, 200, "x" * 197 + "..."),
        ("abcdef", 5, "ab..."),
        ("abcdef", 2, "..."),  # never negative: keeps no character, only the ellipsis
        ("", 0, ""),
    ],
)
def test_truncatechars(value: str, length: int, expected: str) -> None:
    assert truncatechars(value, length) == expected


@pytest.mark.parametrize(
    ("tags", "key", "value", "expected"),
    [
        # a new key is appended
        ([["a", "1"]], "b", "2", [["a", "1"], ["b", "2"]]),
        # a re-set key moves to the end with its new value, every old pair of it removed
        ([["b", "0"], ["a", "1"], ["b", "x"]], "b", "2", [["a", "1"], ["b", "2"]]),
        # None only removes
        ([["a", "1"], ["b", "2"]], "a", None, [["b", "2"]]),
        ([["a", "1"]], "zz", None, [["a", "1"]]),
        # None entries survive a removal
        ([None, ["a", "1"]], "a", "2", [None, ["a", "2"]]),
        # a pair with a null key is never one of a key
        ([[None, "1"], ["a", "1"]], "a", "2", [[None, "1"], ["a", "2"]]),
        # values are trimmed to 200 characters
        ([], "long", "v" * 250, [["long", "v" * 197 + "..."]]),
        ([], "exact", "v" * 200, [["exact", "v" * 200]]),
    ],
)
def test_set(tags: list[Any], key: str, value: Any, expected: list[Any]) -> None:
    data: dict[str, Any] = {"tags": tags}
    EventTags(data["tags"]).set(key, value)
    assert data["tags"] == expected


def test_edits_are_made_in_the_events_own_list() -> None:
    pairs: list[Any] = [["a", "1"], ["b", "2"], ["a", "3"]]
    data = {"tags": pairs}
    tags = EventTags(pairs)
    tags.set("c", "4")
    tags.pop("a")
    tags.set("b", "5")
    assert data["tags"] is pairs
    assert pairs == [["c", "4"], ["b", "5"]]
    # the keys it keeps beside the list follow every edit
    assert tags.get("a") is None and tags.get("b") == "5" and tags.get("c") == "4"
    tags.set("a", "6")
    tags.set("c", None)
    assert pairs == [["b", "5"], ["a", "6"]]
    assert tags.keys == {"a", "b"}


def test_pop() -> None:
    pairs: list[Any] = [["a", "1"], ["a", "2"], None, ["b", "3"]]
    EventTags(pairs).pop("a")
    assert pairs == [None, ["b", "3"]]
    empty: list[Any] = []
    EventTags(empty).pop("a")
    assert empty == []


@pytest.mark.parametrize(
    ("tags", "key", "expected"),
    [
        ([["a", "1"], ["a", "2"]], "a", "1"),  # the first one
        ([None, ["a", "1"]], "a", "1"),
        ([["a", None]], "a", None),  # a pair with a null value reads as absent
        ([], "a", None),
        ([["b", "1"]], "a", None),
    ],
)
def test_get(tags: list[Any], key: str, expected: Any) -> None:
    assert EventTags(tags).get(key) == expected
