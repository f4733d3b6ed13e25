"""Plugin tags (reference §2.4, Sentry's `_derive_plugin_tags_many` and its built-in tag
plugins). Pure, given each project's options.

The registry holds Sentry's built-in tag plugins, ordered by title as Sentry's plugin manager
orders them. A plugin is enabled for a project by the project option `<conf_key>:enabled`
(`conf_key` = the title lower-cased, spaces turned into underscores), else by its default. A
plugin's tags are set only where the event has no tag of that key yet: plugins never override.
A plugin that would raise in Sentry (its `safe_execute` swallows the error) yields no tags.

* URLs (on by default): `url` = the request URL.
* Browsers, Operating Systems, Device (on by default): only for events without a contexts
  interface; every `User-Agent` request header (exact case) parsed with `ua-parser`.
  Relay gives every event a trace context, so in practice they never fire on this path.
* Interface Types (off by default): `interface_type` per interface, highest score first; as the
  tag is set only once, the first one wins.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ua_parser

from consumer.pipeline.interfaces import event_interfaces
from consumer.pipeline.tags import MAX_TAG_VALUE_LENGTH

if TYPE_CHECKING:
    from consumer.pipeline.job import Job

TagValues = Callable[[dict[str, Any], Sequence[str]], list[str]]


class _PluginFailed(Exception):
    """What would make the plugin raise in Sentry: no tags from it for this event."""


@dataclass(frozen=True, slots=True)
class TagPlugin:
    title: str
    tag: str
    values: TagValues
    project_default_enabled: bool = True

    @property
    def conf_key(self) -> str:
        return self.title.lower().replace(" ", "_")

    @property
    def option_key(self) -> str:
        """The `sentry_projectoptions` key that enables or disables it for a project."""
        return f"{self.conf_key}:enabled"

    def is_enabled(self, options: Mapping[str, Any]) -> bool:
        value = options.get(self.option_key)
        if value is not None:
            return bool(value)
        return self.project_default_enabled


def _url(data: dict[str, Any], interfaces: Sequence[str]) -> list[str]:
    if "request" not in interfaces:
        return []
    url = data["request"].get("url")
    if not url:
        return []
    if not isinstance(url, str):
        raise _PluginFailed  # Sentry would fail on len() of it
    return [url]


@functools.lru_cache(maxsize=4096)
def parse_user_agent(value: str) -> tuple[str | None, str | None, str | None]:
    """(browser, os, device) tag values for one user agent, parsed once per distinct value.

    Unknown parts are "Other", as with the `Parse` API Sentry calls."""
    parsed = ua_parser.parse(value).with_defaults()
    agent, os = parsed.user_agent, parsed.os
    return (
        _family_version(agent.family, (agent.major, agent.minor)),
        _family_version(os.family, (os.major, os.minor, os.patch)),
        parsed.device.family,
    )


def _family_version(family: str, parts: tuple[str | None, ...]) -> str | None:
    if not family:
        return None
    version = ".".join(part for part in parts if part)
    return f"{family} {version}" if version else family


def _user_agent_values(which: int) -> TagValues:
    def values(data: dict[str, Any], interfaces: Sequence[str]) -> list[str]:
        if "contexts" in interfaces or "request" not in interfaces:
            return []
        headers = data["request"].get("headers")
        if not headers:
            return []
        pairs = headers.items() if isinstance(headers, dict) else headers
        output = []
        for pair in pairs:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise _PluginFailed
            key, value = pair
            if key != "User-Agent":
                continue
            if not isinstance(value, str):
                raise _PluginFailed
            result = parse_user_agent(value)[which]
            if result:
                output.append(result)
        return output

    return values


def _interface_types(_data: dict[str, Any], interfaces: Sequence[str]) -> list[str]:
    return [key.rsplit(".", 1)[-1] for key in interfaces]


PLUGINS: tuple[TagPlugin, ...] = tuple(
    sorted(
        (
            TagPlugin("Auto Tag: URLs", "url", _url),
            TagPlugin("Auto Tag: Browsers", "browser", _user_agent_values(0)),
            TagPlugin("Auto Tag: Operating Systems", "os", _user_agent_values(1)),
            TagPlugin("Auto Tag: Device", "device", _user_agent_values(2)),
            TagPlugin(
                "Auto Tag: Interface Types",
                "interface_type",
                _interface_types,
                project_default_enabled=False,
            ),
        ),
        key=lambda plugin: plugin.title,
    )
)


def plugins_for_project(options: Mapping[str, Any]) -> tuple[TagPlugin, ...]:
    return tuple(plugin for plugin in PLUGINS if plugin.is_enabled(options))


def apply_plugin_tags(jobs: Sequence[Job], options: Mapping[int, Mapping[str, Any]]) -> None:
    """`options` = every project's options (`{project_id: {key: value}}`), missing = none."""
    enabled = {
        project_id: tuple(
            (plugin.tag, plugin.values)
            for plugin in plugins_for_project(options.get(project_id, {}))
        )
        for project_id in {job.project_id for job in jobs}
    }
    for job in jobs:
        data = job.data
        interfaces = job.interfaces
        if interfaces is None:
            interfaces = job.interfaces = event_interfaces(data)
        tags = job.tags
        assert tags is not None  # pulled out
        for tag, tag_values in enabled[job.project_id]:
            try:
                values = tag_values(data, interfaces)
            except _PluginFailed:
                continue  # Sentry's safe_execute: no tags from this plugin
            for value in values:
                # Values too long for a tag are skipped, and a plugin never overrides a tag.
                if len(value) <= MAX_TAG_VALUE_LENGTH and tags.get(tag) is None:
                    tags.set(tag, value)
