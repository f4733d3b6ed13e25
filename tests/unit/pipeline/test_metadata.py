"""Metadata, title, location and the culprit (reference §2.6)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.culprit import frame_culprit, generate_culprit, get_culprit
from consumer.pipeline.metadata import apply_metadata
from tests.unit.pipeline.builders import job


def _stacktrace(*frames: dict[str, Any]) -> dict[str, Any]:
    return {"frames": list(frames)}


@pytest.mark.parametrize(
    ("frame", "platform", "expected"),
    [
        ({"module": "app.views", "function": "index"}, "python", "app.views in index"),
        ({"filename": "app/views.py", "function": "index"}, "python", "app/views.py in index"),
        ({"module": "app.views"}, "python", "app.views in ?"),
        ({"function": "index"}, "python", ""),  # no module nor filename
        ({"filename": "app.js", "function": "onClick"}, "javascript", "onClick(app.js)"),
        ({"filename": "app.js"}, "node", "?(app.js)"),
        (
            {"function": "-[ViewController crash]", "filename": "x.m"},
            "cocoa",
            "-[ViewController crash]",
        ),
        ({"filename": "x.c"}, "native", "?"),
        ({"function": "main"}, "objc", "main"),
        ({"function": "f", "filename": "a.js", "platform": "javascript"}, "python", "f(a.js)"),
    ],
)
def test_frame_culprit_per_platform(frame: dict[str, Any], platform: str, expected: str) -> None:
    assert frame_culprit(frame, platform) == expected


CULPRITS: list[tuple[str, dict[str, Any], str]] = [
    (
        "the last in-app frame",
        {
            "platform": "python",
            "stacktrace": _stacktrace(
                {"module": "app.a", "function": "first", "in_app": True},
                {"module": "app.b", "function": "second", "in_app": True},
                {"module": "lib.c", "function": "third", "in_app": False},
            ),
        },
        "app.b in second",
    ),
    (
        "no in-app frame: the last frame",
        {
            "platform": "python",
            "stacktrace": _stacktrace(
                {"module": "lib.a", "function": "x"}, {"module": "lib.b", "function": "y"}
            ),
        },
        "lib.b in y",
    ),
    (
        "an in-app frame without a culprit falls back to the last non-in-app one",
        {
            "platform": "python",
            "stacktrace": _stacktrace(
                {"module": "lib.a", "function": "x"},
                {"function": "no_file", "in_app": True},
                {"module": "lib.b", "function": "y"},
            ),
        },
        "lib.b in y",
    ),
    (
        "from exception frames, the last exception with frames",
        {
            "platform": "python",
            "exception": {
                "values": [
                    {
                        "stacktrace": _stacktrace(
                            {"module": "first", "function": "f", "in_app": True}
                        )
                    },
                    {
                        "stacktrace": _stacktrace(
                            {"module": "second", "function": "g", "in_app": True}
                        )
                    },
                    {"type": "NoFrames"},
                ]
            },
        },
        "second in g",
    ),
    (
        "a synthetic last exception has no culprit, not even the URL",
        {
            "exception": {
                "values": [
                    {"mechanism": {"synthetic": True}, "stacktrace": _stacktrace({"module": "m"})}
                ]
            },
            "request": {"url": "https://x/"},
        },
        "",
    ),
    (
        "exception values win over a top-level stacktrace",
        {
            "exception": {"values": [{"type": "E"}]},
            "stacktrace": _stacktrace({"module": "top", "function": "f"}),
            "request": {"url": "https://from-request/"},
        },
        "https://from-request/",
    ),
    (
        "the request URL",
        {"request": {"url": "https://shop.example.com/cart"}},
        "https://shop.example.com/cart",
    ),
    (
        "truncated at 200 characters",
        {"request": {"url": "https://x/" + "a" * 300}},
        ("https://x/" + "a" * 300)[:197] + "...",
    ),
    ("nothing at all", {"platform": "python"}, ""),
    ("empty frames", {"stacktrace": {"frames": [None, {}]}, "request": {"url": "u"}}, "u"),
]


@pytest.mark.parametrize(("case", "data", "expected"), CULPRITS, ids=[c for c, _, _ in CULPRITS])
def test_generate_culprit(case: str, data: dict[str, Any], expected: str) -> None:
    assert generate_culprit(data) == expected


def test_get_culprit_prefers_the_events_culprit_then_its_transaction_untruncated() -> None:
    long_name = "GET /" + "x" * 300
    url = {"request": {"url": "https://x/"}}
    assert get_culprit({"culprit": "mine", "transaction": "t", **url}) == "mine"
    assert get_culprit({"transaction": long_name, **url}) == long_name
    assert get_culprit({"transaction": "", **url}) == "https://x/"
    assert get_culprit({}) == ""


@pytest.mark.parametrize(
    ("data", "metadata", "title"),
    [
        ({"metadata": {"title": "Slow DB query"}}, {"title": "Slow DB query"}, "Slow DB query"),
        ({"metadata": {"title": "T", "extra": 1}}, {"title": "T", "extra": 1}, "T"),
        ({}, {}, "<untitled>"),  # missing metadata
        ({"metadata": None}, {}, "<untitled>"),  # null metadata is ignored
        ({"title": "own title"}, {"title": "own title"}, "own title"),
        (
            {"title": "own", "metadata": {"title": "from metadata"}},
            {"title": "from metadata"},
            "from metadata",
        ),
        ({"metadata": {"title": None}}, {"title": None}, "<untitled>"),
    ],
)
def test_metadata_and_title(data: dict[str, Any], metadata: dict[str, Any], title: str) -> None:
    made = job({**data, "transaction": "GET /x"})
    apply_metadata([made])
    assert made.data["metadata"] == metadata
    assert made.data["title"] == title
    assert made.data["type"] == "generic"
    assert made.data["location"] is None
    assert made.data["culprit"] == made.culprit == "GET /x"
    # the copy kept on the job is taken before the event's metadata is merged in
    assert made.event_metadata == ({"title": data["title"]} if "title" in data else {})


def test_metadata_fields_land_in_order_and_existing_keys_stay_in_place() -> None:
    made = job({"type": "generic", "platform": "python", "metadata": {"title": "x"}})
    apply_metadata([made])
    keys = list(made.data)
    assert keys.index("type") < keys.index("platform") < keys.index("metadata")
    assert keys[-3:] == ["culprit", "title", "location"]
