"""The event's interfaces as Sentry builds them: which, in what order, and the fields their
construction writes into the stored event."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.interfaces import (
    FRAME_FIELDS,
    MECHANISM_FIELDS,
    REQUEST_FIELDS,
    SDK_FIELDS,
    event_interfaces,
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # by score, ties in the event's order
        (
            {
                "user": {},
                "breadcrumbs": {"values": []},
                "request": {},
                "contexts": {},
                "sdk": {},
                "debug_meta": {},
                "stacktrace": {},
                "exception": {"values": [{}]},
            },
            (
                "exception",
                "stacktrace",
                "breadcrumbs",
                "request",
                "contexts",
                "user",
                "sdk",
                "debug_meta",
            ),
        ),
        ({"contexts": {}, "request": {}}, ("contexts", "request")),
        # None values and unknown keys are no interfaces
        ({"request": None, "extra": {"a": 1}, "tags": [], "modules": {}}, ()),
        # an exception list without values is an empty interface
        ({"exception": {"values": [None]}, "user": {}}, ("user",)),
        ({"exception": {"values": None}}, ()),
        # interfaces Sentry would fail to build are skipped
        ({"contexts": {"a": "not an object"}, "request": "nope", "user": {}}, ("user",)),
    ],
)
def test_which_and_in_what_order(data: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert event_interfaces(data) == expected


def test_building_fills_missing_fields_in_the_event_itself() -> None:
    data: dict[str, Any] = {
        "request": {"url": "https://x/", "method": "GET"},
        "sdk": {"name": "sentry.python"},
        "stacktrace": {"frames": [{"function": "f", "in_app": True}, None, {}]},
        "exception": {
            "values": [
                {
                    "type": "E",
                    "mechanism": {"type": "generic"},
                    "stacktrace": {"frames": [{"filename": "a.py"}]},
                }
            ]
        },
        "user": {"id": "1"},
    }
    event_interfaces(data)
    request = data["request"]
    assert list(request) == [
        "url",
        "method",
        "query_string",
        *[f for f in REQUEST_FIELDS if f not in ("url", "method")],
    ]
    assert request["query_string"] == [] and request["headers"] is None
    assert list(data["sdk"]) == ["name", *SDK_FIELDS[1:]]
    frame = data["stacktrace"]["frames"][0]
    assert set(frame) == set(FRAME_FIELDS) and frame["function"] == "f" and frame["in_app"] is True
    assert data["stacktrace"]["frames"][1:] == [None, {}]  # empty frames are left alone
    single = data["exception"]["values"][0]
    assert set(single["mechanism"]) == set(MECHANISM_FIELDS)
    assert set(single["stacktrace"]["frames"][0]) == set(FRAME_FIELDS)
    assert data["user"] == {"id": "1"}  # the user interface copies what it reads
