"""User agents parsed once each, with a result identical to Relay's own user-agent
normalization (CONTRACT §3): proven over every sample event and over sentry-sdk events, and on
each of Relay's rules for when it fills the browser, device and OS contexts."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer import metrics
from consumer.loadgen.occurrences import wrap_event
from consumer.loadgen.sdk import USER_AGENTS, capture_events
from consumer.pipeline.message import Occurrence, build_event, parse
from consumer.pipeline.normalize import EventNormalizer, user_agent_contexts
from consumer.pipeline.user_agent import UserAgentContexts, user_agent_info
from tests.unit.pipeline.builders import event
from tests.unit.pipeline.samples import load_samples

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/109.0.0.0 Safari/537.36"
)


def _relays_own(normalizer: EventNormalizer, event_body: dict[str, Any]) -> dict[str, Any]:
    result = normalizer.normalize_raw(orjson.dumps(event_body), 1, normalize_user_agent=True)
    result["type"] = event_body["type"]
    return result


def _same_as_relay(
    normalizer: EventNormalizer,
    event_body: dict[str, Any],
    user_agents: UserAgentContexts | None = None,
) -> dict[str, Any]:
    ours = normalizer.normalize(event_body, 1)
    (user_agents or _USER_AGENTS).apply(ours)
    theirs = _relays_own(normalizer, event_body)
    # `received` is the normalization time; everything else must match byte for byte.
    ours.pop("received")
    theirs.pop("received")
    assert orjson.dumps(ours) == orjson.dumps(theirs)
    return ours


_USER_AGENTS = user_agent_contexts()


def _built(value: bytes) -> dict[str, Any]:
    built = build_event(parse(value))
    assert isinstance(built, Occurrence) and built.event is not None
    return built.event


def test_identical_to_relay_on_every_sample(samples_dir: Path) -> None:
    normalizer = EventNormalizer()
    rng = random.Random(3)
    checked = with_user_agent = 0
    for sample in load_samples(samples_dir):
        if not sample.accepted or sample.event is None:
            continue
        event_body = _built(wrap_event(sample.event, 1, rng)[1])
        result = _same_as_relay(normalizer, event_body)
        checked += 1
        with_user_agent += user_agent_info(result) not in (None, (None,) * 5)
    assert checked == 44
    assert with_user_agent >= 10, "the samples should exercise user agents"


def test_identical_to_relay_on_sdk_events() -> None:
    normalizer = EventNormalizer()
    user_agents = user_agent_contexts()
    rng = random.Random(4)
    distinct = set()
    for sdk_event in capture_events(300, seed=13):
        result = _same_as_relay(normalizer, _built(wrap_event(sdk_event, 1, rng)[1]), user_agents)
        info = user_agent_info(result)
        if info not in (None, (None,) * 5):
            distinct.add(info)
    # Each distinct user agent was parsed once: one probe each, the rest were cache hits.
    assert 3 <= len(distinct) <= len(USER_AGENTS)
    assert len(user_agents._cache) == len(distinct)


def _with(headers: list[list[Any]] | None = None, **fields: Any) -> dict[str, Any]:
    body = event(**fields)
    if headers is not None:
        body["request"] = {"url": "https://example.com/", "headers": headers}
    body.pop("project_id")
    body["type"] = "generic"
    body["level"] = "info"
    body["metadata"] = {"title": "t"}
    return body


ABSENT = "(absent)"
RULES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "a user agent fills browser, device and client_os",
        _with([["User-Agent", CHROME_MAC]]),
        {"browser": "browser", "device": "device", "client_os": "os"},
    ),
    (
        "header names are compared without case; the last one wins",
        _with([["user-agent", "curl/8.5.0"], ["USER-AGENT", CHROME_MAC]]),
        {"browser": "browser", "device": "device", "client_os": "os"},
    ),
    (
        "JavaScript events get the OS under `os`",
        _with([["User-Agent", CHROME_MAC]], platform="javascript"),
        {"os": "os", "browser": "browser", "client_os": ABSENT},
    ),
    (
        "a browser context of type browser is kept",
        _with([["User-Agent", CHROME_MAC]], contexts={"browser": {"name": "Mine", "version": "1"}}),
        {"browser": "browser"},
    ),
    (
        "a context of another type at `browser` is replaced",
        _with([["User-Agent", CHROME_MAC]], contexts={"browser": {"type": "os", "name": "X"}}),
        {"browser": "browser"},
    ),
    (
        "a null `browser` is replaced",
        _with([["User-Agent", CHROME_MAC]], contexts={"browser": None}),
        {"browser": "browser"},
    ),
    (
        "any value under the OS key, even null, blocks the OS context",
        _with([["User-Agent", CHROME_MAC]], contexts={"client_os": None}),
        {"client_os": None},
    ),
    (
        "an `os` context does not block `client_os`",
        _with([["User-Agent", CHROME_MAC]], contexts={"os": {"name": "Linux"}}),
        {"os": "os", "client_os": "os"},
    ),
    (
        "client hints win over the user agent",
        _with(
            [
                ["User-Agent", CHROME_MAC],
                ["Sec-CH-UA", '"Not_A Brand";v="99", "Google Chrome";v="109", "Chromium";v="109"'],
                ["Sec-CH-UA-Platform", '"macOS"'],
                ["Sec-CH-UA-Platform-Version", '"13.1.0"'],
                ["Sec-CH-UA-Model", '"Pixel 8"'],
            ]
        ),
        {"browser": "browser", "client_os": "os", "device": "device"},
    ),
    (
        "an empty platform version stays (it is not the same as none)",
        _with([["Sec-CH-UA-Platform", '"Windows"'], ["Sec-CH-UA-Platform-Version", ""]]),
        {"client_os": "os"},
    ),
    (
        "an unknown user agent adds nothing",
        _with([["User-Agent", "a dont no"]]),
        {"browser": ABSENT, "device": ABSENT, "client_os": ABSENT},
    ),
    (
        "headers without any user agent add nothing",
        _with([["Accept", "*/*"]]),
        {"browser": ABSENT, "device": ABSENT, "client_os": ABSENT},
    ),
    (
        "the last user agent wins even when it is not a string (then: none)",
        _with([["User-Agent", CHROME_MAC], ["User-Agent", 5]]),
        {"browser": ABSENT, "device": ABSENT, "client_os": ABSENT},
    ),
]


@pytest.mark.parametrize(("case", "body", "expected"), RULES, ids=[case for case, _, _ in RULES])
def test_rules_match_relays_own(case: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    result = _same_as_relay(EventNormalizer(), body)
    contexts = result["contexts"]
    for key, kind in expected.items():
        if kind is ABSENT:
            assert key not in contexts, case
        elif kind is None:
            assert contexts[key] is None, case
        else:
            assert contexts[key]["type"] == kind, case
    assert list(contexts) == sorted(contexts), "contexts are a sorted map, as Relay writes them"


def test_kept_browser_context_is_the_clients() -> None:
    body = _with(
        [["User-Agent", CHROME_MAC]], contexts={"browser": {"name": "Mine", "version": "1"}}
    )
    assert _same_as_relay(EventNormalizer(), body)["contexts"]["browser"]["name"] == "Mine"


def test_cache_is_bounded_and_counts_hits_and_misses() -> None:
    probes: list[dict[str, Any]] = []

    def probe(event_body: dict[str, Any]) -> dict[str, Any]:
        probes.append(event_body)
        return {"contexts": {"browser": {"name": "B", "type": "browser"}}}

    cache = UserAgentContexts(probe, maxsize=2)
    infos = [(f"agent {n}", None, None, None, None) for n in range(3)]
    cache.derived(infos[0])
    cache.derived(infos[0])
    cache.derived(infos[1])
    cache.derived(infos[2])  # evicts the least recently used: infos[0]
    cache.derived(infos[0])
    assert [p["request"]["headers"] for p in probes] == [
        [["User-Agent", "agent 0"]],
        [["User-Agent", "agent 1"]],
        [["User-Agent", "agent 2"]],
        [["User-Agent", "agent 0"]],
    ]
    assert (cache.hits, cache.misses) == (1, 4)
    hits_before = metrics.total(metrics.CACHE_REQUESTS, cache="user_agent", result="hit")
    cache.flush_metrics()
    assert (
        metrics.total(metrics.CACHE_REQUESTS, cache="user_agent", result="hit") == hits_before + 1
    )
    assert (cache.hits, cache.misses) == (0, 0)


def test_without_contexts_to_merge_into_it_declines() -> None:
    cache = UserAgentContexts(lambda _event: {"contexts": {}}, maxsize=2)
    normalized = {"platform": "python", "request": {"headers": [["User-Agent", CHROME_MAC]]}}
    assert cache.apply(normalized) is False
    assert "contexts" not in normalized
    assert cache.apply({"platform": "python"}) is True  # no headers: nothing to do
