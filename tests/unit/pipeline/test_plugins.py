"""Plugin tags (reference §2.4): the registry, per-project enablement through project options,
and plugins never overriding a tag."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.interfaces import event_interfaces
from consumer.pipeline.plugins import PLUGINS, apply_plugin_tags, plugins_for_project
from tests.unit.pipeline.builders import job

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/109.0.0.0 Safari/537.36"
)


def test_registry_is_sorted_by_title_with_sentrys_option_keys() -> None:
    assert [(p.title, p.option_key, p.project_default_enabled) for p in PLUGINS] == [
        ("Auto Tag: Browsers", "auto_tag:_browsers:enabled", True),
        ("Auto Tag: Device", "auto_tag:_device:enabled", True),
        ("Auto Tag: Interface Types", "auto_tag:_interface_types:enabled", False),
        ("Auto Tag: Operating Systems", "auto_tag:_operating_systems:enabled", True),
        ("Auto Tag: URLs", "auto_tag:_urls:enabled", True),
    ]


@pytest.mark.parametrize(
    ("options", "enabled"),
    [
        ({}, ["browser", "device", "os", "url"]),
        ({"auto_tag:_urls:enabled": False}, ["browser", "device", "os"]),
        (
            {"auto_tag:_interface_types:enabled": True},
            ["browser", "device", "interface_type", "os", "url"],
        ),
        (
            {"auto_tag:_browsers:enabled": 0, "auto_tag:_device:enabled": None},
            ["device", "os", "url"],
        ),
        ({"auto_tag:_operating_systems:enabled": "yes"}, ["browser", "device", "os", "url"]),
    ],
)
def test_enablement_per_project(options: dict[str, Any], enabled: list[str]) -> None:
    assert [plugin.tag for plugin in plugins_for_project(options)] == enabled


def _tags(data: dict[str, Any]) -> list[list[Any]]:
    return data["tags"]  # type: ignore[no-any-return]


def test_url_tag_and_plugins_never_override() -> None:
    made = job({"request": {"url": "https://shop.example.com/cart"}, "contexts": {}, "tags": []})
    apply_plugin_tags([made], {})
    assert ["url", "https://shop.example.com/cart"] in _tags(made.data)

    kept = job({"request": {"url": "https://x/"}, "contexts": {}, "tags": [["url", "mine"]]})
    apply_plugin_tags([kept], {})
    assert [pair for pair in _tags(kept.data) if pair[0] == "url"] == [["url", "mine"]]


def test_url_longer_than_a_tag_is_not_tagged() -> None:
    made = job({"request": {"url": "https://x/" + "a" * 200}, "tags": []})
    apply_plugin_tags([made], {})
    assert "url" not in dict(pair for pair in _tags(made.data))


def test_user_agent_plugins_only_without_contexts() -> None:
    headers = [["User-Agent", CHROME_MAC], ["user-agent", "ignored: not the exact case"]]
    bare = job({"request": {"url": "https://x/", "headers": headers}, "tags": []})
    with_contexts = job(
        {"request": {"url": "https://x/", "headers": headers}, "contexts": {}, "tags": []}
    )
    apply_plugin_tags([bare, with_contexts], {})
    tags = dict(pair for pair in _tags(bare.data))
    assert (tags["browser"], tags["os"], tags["device"]) == (
        "Chrome 109.0",
        "Mac OS X 10.15.7",
        "Mac",
    )
    assert {"browser", "os", "device"}.isdisjoint(dict(pair for pair in _tags(with_contexts.data)))


def test_user_agent_plugins_fail_quietly_on_a_value_that_is_not_a_string() -> None:
    made = job({"request": {"url": "https://x/", "headers": [["User-Agent", None]]}, "tags": []})
    apply_plugin_tags([made], {})
    assert _tags(made.data) == [["url", "https://x/"]]  # the other plugins still run


def test_interface_type_plugin_off_by_default_and_first_interface_wins() -> None:
    data = {"user": {"id": "1"}, "request": {"url": "https://x/"}, "stacktrace": {"frames": [{}]}}
    off = job({**data, "tags": []})
    on = job({**data, "tags": []})
    apply_plugin_tags([off], {})
    apply_plugin_tags([on], {1: {"auto_tag:_interface_types:enabled": True}})
    assert "interface_type" not in dict(pair for pair in _tags(off.data))
    assert on.interfaces == ("stacktrace", "request", "user")
    assert [pair for pair in _tags(on.data) if pair[0] == "interface_type"] == [
        ["interface_type", "stacktrace"]
    ]


def test_options_are_per_project() -> None:
    first = job({"request": {"url": "https://one/"}, "tags": []}, project_id=1)
    second = job({"request": {"url": "https://two/"}, "tags": []}, project_id=2)
    apply_plugin_tags([first, second], {2: {"auto_tag:_urls:enabled": False}})
    assert ["url", "https://one/"] in _tags(first.data)
    assert "url" not in dict(pair for pair in _tags(second.data))


def test_interfaces_are_computed_once() -> None:
    made = job({"request": {"url": "https://x/"}, "tags": []})
    made.interfaces = ()  # as if already computed: no request interface
    apply_plugin_tags([made], {})
    assert "url" not in dict(pair for pair in _tags(made.data))
    assert event_interfaces(made.data) == ("request",)
