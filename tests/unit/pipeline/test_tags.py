"""Sentry's tag helpers, exactly (reference §2.11)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.tags import get_tag, pop_tag, set_tag, truncatechars


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
        # None entries survive a pop
        ([None, ["a", "1"]], "a", "2", [None, ["a", "2"]]),
        # values are trimmed to 200 characters
        ([], "long", "v" * 250, [["long", "v" * 197 + "..."]]),
        ([], "exact", "v" * 200, [["exact", "v" * 200]]),
    ],
)
def test_set_tag(tags: list[Any], key: str, value: Any, expected: list[Any]) -> None:
    data: dict[str, Any] = {"tags": tags}
    set_tag(data, key, value)
    assert data["tags"] == expected


def test_set_tag_creates_the_list() -> None:
    data: dict[str, Any] = {}
    set_tag(data, "level", None)
    assert "tags" not in data
    set_tag(data, "level", "error")
    assert data == {"tags": [["level", "error"]]}


def test_pop_tag_without_tags_is_a_no_op() -> None:
    data: dict[str, Any] = {"x": 1}
    pop_tag(data, "a")
    assert data == {"x": 1}
    data = {"tags": [["a", "1"], ["a", "2"], ["b", "3"]]}
    pop_tag(data, "a")
    assert data["tags"] == [["b", "3"]]


@pytest.mark.parametrize(
    ("tags", "key", "expected"),
    [
        ([["a", "1"], ["a", "2"]], "a", "1"),  # the first one
        ([None, ["a", "1"]], "a", "1"),
        ([["a", None]], "a", None),  # a pair with a null value reads as absent
        ([], "a", None),
        (None, "a", None),
    ],
)
def test_get_tag(tags: Any, key: str, expected: Any) -> None:
    assert get_tag({"tags": tags}, key) == expected
