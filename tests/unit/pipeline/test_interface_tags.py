"""Interface tags (reference §2.5): contexts of every type, the exception mechanism, and the
precedence between plugin, user and interface tags."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.contexts import context_tags
from consumer.pipeline.interface_tags import apply_interface_tags, exception_tags
from consumer.pipeline.plugins import apply_plugin_tags
from consumer.pipeline.users import apply_event_users
from tests.unit.pipeline.builders import job

CONTEXTS: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "device",
        {"device": {"type": "device", "model": "iPhone15,2", "family": "iOS", "arch": "arm64"}},
        [("device", "iPhone15,2"), ("device.family", "iOS")],
    ),
    (
        "runtime",
        {"runtime": {"type": "runtime", "name": "CPython", "version": "3.11.7"}},
        [("runtime", "CPython 3.11.7"), ("runtime.name", "CPython")],
    ),
    (
        "browser",
        {"browser": {"type": "browser", "name": "Chrome", "version": "109.0.0"}},
        [("browser", "Chrome 109.0.0"), ("browser.name", "Chrome")],
    ),
    (
        "os with rooted",
        {"os": {"type": "os", "name": "Android", "version": "14", "rooted": True}},
        [("os", "Android 14"), ("os.name", "Android"), ("os.rooted", "yes")],
    ),
    (
        "os not rooted",
        {"os": {"type": "os", "name": "iOS", "version": "17", "rooted": False}},
        [("os", "iOS 17"), ("os.name", "iOS"), ("os.rooted", "no")],
    ),
    (
        "gpu",
        {"gpu": {"type": "gpu", "name": "Apple M1", "vendor_name": "Apple", "vendor_id": "1"}},
        [("gpu.name", "Apple M1"), ("gpu.vendor", "Apple")],
    ),
    (
        "monitor",
        {"monitor": {"type": "monitor", "id": "6b2d", "slug": "nightly-backup"}},
        [("monitor.id", "6b2d"), ("monitor.slug", "nightly-backup")],
    ),
    ("app", {"app": {"type": "app", "device_app_hash": "4a2f"}}, [("app.device", "4a2f")]),
    ("trace: no tags", {"trace": {"type": "trace", "trace_id": "a" * 32}}, []),
    ("otel: no tags", {"otel": {"type": "otel", "attributes": {"a": 1}}}, []),
    ("default: no tags", {"default": {"type": "default", "name": "x"}}, []),
    ("an unknown type is the default", {"mine": {"type": "mine", "name": "x"}}, []),
    (
        "the type comes from `type`, the tag name from the alias",
        {"server-os": {"type": "os", "name": "Linux", "version": "6.1"}},
        [("server-os", "Linux 6.1"), ("server-os.name", "Linux")],
    ),
    (
        "without `type` the alias is the type",
        {"runtime": {"name": "node", "version": "20"}},
        [("runtime", "node 20"), ("runtime.name", "node")],
    ),
    (
        "a missing field skips only the mappings naming it",
        {"browser": {"type": "browser", "name": "Firefox"}},
        [("browser.name", "Firefox")],
    ),
    (
        "a None field is a missing field",
        {"os": {"type": "os", "name": "Linux", "version": None, "rooted": None}},
        [("os.name", "Linux")],
    ),
    (
        "values are stripped and empty results skipped",
        {"device": {"type": "device", "model": "  ", "family": " Pixel "}},
        [("device.family", "Pixel")],
    ),
    (
        "non-strings render with str()",
        {"runtime": {"type": "runtime", "name": 3, "version": 1.5}},
        [("runtime", "3 1.5"), ("runtime.name", "3")],
    ),
    ("a null context is skipped", {"browser": None}, []),
]


@pytest.mark.parametrize(
    ("case", "contexts", "expected"), CONTEXTS, ids=[case for case, _, _ in CONTEXTS]
)
def test_context_tags(case: str, contexts: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert list(context_tags(contexts)) == expected


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (
            {
                "values": [
                    {"type": "A"},
                    {"type": "B", "mechanism": {"type": "celery", "handled": False}},
                ]
            },
            [("mechanism", "celery"), ("handled", "no")],
        ),
        (
            {"values": [{"mechanism": {"type": "generic", "handled": True}}]},
            [("mechanism", "generic"), ("handled", "yes")],
        ),
        ({"values": [{"mechanism": {"type": "onerror"}}]}, [("mechanism", "onerror")]),
        ({"values": [{"mechanism": {"handled": True}}]}, [("mechanism", None), ("handled", "yes")]),
        ({"values": [{"mechanism": {"type": "x"}}, {"type": "last, no mechanism"}]}, []),
        ({"values": [{"mechanism": {"type": "x"}}, None]}, []),
        ({"values": []}, []),
    ],
)
def test_exception_mechanism_tags(
    exception: dict[str, Any], expected: list[tuple[str, Any]]
) -> None:
    assert list(exception_tags(exception)) == expected


def test_interface_tags_follow_interface_order_and_override() -> None:
    made = job(
        {
            "contexts": {"os": {"type": "os", "name": "Linux", "version": "6.1"}},
            "exception": {
                "values": [{"type": "E", "mechanism": {"type": "logging", "handled": True}}]
            },
            "tags": [["os", "client says"], ["handled", "client says"]],
        }
    )
    apply_interface_tags([made])
    # exception (score 2000) before contexts (800); set_tag moves overridden keys to the end
    assert made.data["tags"] == [
        ["mechanism", "logging"],
        ["handled", "yes"],
        ["os", "Linux 6.1"],
        ["os.name", "Linux"],
    ]


def test_precedence_plugin_user_and_interface_tags() -> None:
    """Plugins never override; the user step replaces `user`/`sentry:user`; interfaces override
    everything before them (here a context aliased `url` overrides the URL plugin's tag, and one
    aliased `sentry:user` overrides the user's)."""
    made = job(
        {
            "user": {"id": "7"},
            "request": {"url": "https://shop.example.com/"},
            "contexts": {
                "url": {"type": "device", "model": "from-context"},
                "sentry:user": {"type": "device", "model": "ctx-user"},
            },
            "tags": [["user", "client"], ["device", "client device"]],
        }
    )
    apply_event_users([made])
    apply_plugin_tags([made], {})
    tags = dict(pair for pair in made.data["tags"])
    assert tags["sentry:user"] == "id:7" and "user" not in tags
    assert tags["url"] == "https://shop.example.com/"  # the plugin, as no url tag existed
    assert tags["device"] == "client device"

    apply_interface_tags([made])
    tags = dict(pair for pair in made.data["tags"])
    assert tags["url"] == "from-context"
    assert tags["sentry:user"] == "ctx-user"
    assert tags["device"] == "client device"  # untouched: no interface sets `device` here


def test_plugin_does_not_override_a_user_set_tag() -> None:
    made = job(
        {"user": {"email": "a@b.c"}, "request": {"url": "https://x/"}, "tags": [["url", "kept"]]}
    )
    apply_event_users([made])
    apply_plugin_tags([made], {})
    assert [pair for pair in made.data["tags"] if pair[0] in ("url", "sentry:user")] == [
        ["url", "kept"],
        ["sentry:user", "email:a@b.c"],
    ]
