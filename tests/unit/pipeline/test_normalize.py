"""`relay_normalize` against the library's own `StoreNormalizer.normalize_event`: the same Relay
result for every sample and sentry-sdk event, for the values the library's extra pass over the
JSON exists for, and the same error where Relay refuses the event."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from sentry_relay.exceptions import RelayError

from consumer.errors import BadMessage
from consumer.loadgen.occurrences import wrap_event
from consumer.loadgen.sdk import capture_events
from consumer.pipeline.message import Occurrence, build_event, parse
from consumer.pipeline.normalize import EventNormalizer, relay_normalize, store_normalizer
from tests.unit.pipeline.builders import event
from tests.unit.pipeline.samples import load_samples

NORMALIZERS = {
    user_agent: store_normalizer(1, normalize_user_agent=user_agent) for user_agent in (False, True)
}


def _library(user_agent: bool, raw: bytes) -> dict[str, Any]:
    result: dict[str, Any] = NORMALIZERS[user_agent].normalize_event(
        raw_event=raw, json_loads=orjson.loads
    )
    return result


def _assert_same(raw: bytes) -> None:
    for user_agent, normalizer in NORMALIZERS.items():
        ours = relay_normalize(normalizer, raw)
        theirs = _library(user_agent, raw)
        # `received` is the time of normalization; everything else is Relay's, byte for byte.
        assert abs(ours.pop("received") - theirs.pop("received")) < 60
        assert orjson.dumps(ours) == orjson.dumps(theirs)


def _built(value: bytes) -> dict[str, Any]:
    built = build_event(parse(value))
    assert isinstance(built, Occurrence) and built.event is not None
    return built.event


def test_same_as_the_library_on_every_sample(samples_dir: Path) -> None:
    rng = random.Random(8)
    checked = 0
    for sample in load_samples(samples_dir):
        if sample.accepted:
            assert sample.event is not None
            _assert_same(orjson.dumps(_built(wrap_event(sample.event, 1, rng)[1])))
            checked += 1
    assert checked == 44


def test_same_as_the_library_on_sdk_events() -> None:
    rng = random.Random(9)
    for sdk_event in capture_events(200, seed=21):
        _assert_same(orjson.dumps(_built(wrap_event(sdk_event, 1, rng)[1])))


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        2**64 - 1,
        2**63,
        -(2**63),
        1e308,
        "NaN Infinity 99999999999999999999999",
    ],
    ids=repr,
)
def test_same_as_the_library_where_its_extra_pass_would_rewrite_python_json(value: Any) -> None:
    # The library's pass turns NaN, Infinity and integers beyond 64 bits into 0; orjson writes
    # NaN and the infinities as null and the rest as they are, so the pass has nothing to do.
    body = event(extra={"value": value, "nested": [value, {"value": value}]})
    _assert_same(orjson.dumps(body))


def test_integers_beyond_64_bits_are_refused_before_relay() -> None:
    normalizer = EventNormalizer()
    with pytest.raises(BadMessage) as raised:
        normalizer.normalize(event(extra={"value": 2**64}), 1)
    assert raised.value.reason == "normalization_failed"


def test_an_event_relay_refuses_raises_the_librarys_error() -> None:
    raw = orjson.dumps(event(extra={"a": _nested(150)}))
    with pytest.raises(RelayError) as theirs:
        _library(False, raw)
    with pytest.raises(RelayError) as ours:
        relay_normalize(NORMALIZERS[False], raw)
    assert type(ours.value) is type(theirs.value)
    assert ours.value.message == theirs.value.message


def test_the_normalizer_keeps_working_after_a_refusal() -> None:
    normalizer = NORMALIZERS[False]
    with pytest.raises(RelayError):
        relay_normalize(normalizer, b"{not json")
    assert relay_normalize(normalizer, orjson.dumps(event()))["platform"] == "python"


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value
