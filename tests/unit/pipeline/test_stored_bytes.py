"""What the pipeline stores is, byte for byte, what it stored before its CPU work: every Sentry
sample event and a few hundred sentry-sdk events, decoded and saved by the current code and by
the reference (`reference.py`, the old code kept as it was), compared row by row.

Why a reference and not golden digests: Relay stamps `received` with the time it normalizes,
sentry-sdk events carry this machine's paths, host and versions, and a new sentry-relay may
change its output; digests recorded once would break for reasons that have nothing to do with
the pipeline, while the two implementations run side by side see the same input. The event
Relay produced is copied before either pipeline runs, so both save the same normalized event.
"""

from __future__ import annotations

import base64
import random
import zlib
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import BadMessage
from consumer.loadgen.occurrences import wrap_event
from consumer.loadgen.sdk import capture_events
from consumer.pipeline import contexts, interfaces, save, user_agent
from consumer.pipeline.job import Job
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.message import (
    MessageDecoder,
    Occurrence,
    Prepared,
    Skip,
    build_event,
    parse,
)
from consumer.pipeline.normalize import EventNormalizer, user_agent_contexts
from consumer.pipeline.save import OccurrencePipeline
from consumer.pipeline.tags import EventTags
from consumer.storage.models import Project
from tests.unit.pipeline import reference
from tests.unit.pipeline.builders import ORG_ID, PROJECT_ID
from tests.unit.pipeline.samples import load_samples

T = TypeVar("T")

INSERTED = 1717236000.123456
# The interface-type plugin on, the URL plugin off: the other way round from the defaults.
OPTIONS: dict[str, Any] = {"auto_tag:_interface_types:enabled": True, "auto_tag:_urls:enabled": 0}
# Job fields that leave the pipeline other than through the rows (storage, metrics); `tags`,
# `nodes` and `occurrence_json` are compared through the stored rows, `decode_seconds` and
# `normalize_seconds` are times.
NOT_COMPARED = {
    "tags",
    "nodes",
    "occurrence_json",
    "decode_seconds",
    "normalize_seconds",
    "group",  # set after save_generic_events, by grouping (test_groups.py)
}


@pytest.fixture(scope="module")
def sdk_messages() -> list[bytes]:
    rng = random.Random(31)
    return [wrap_event(event, PROJECT_ID, rng)[1] for event in capture_events(300, seed=37)]


@pytest.fixture(scope="module")
def sample_messages(samples_dir: Path) -> list[bytes]:
    rng = random.Random(32)
    messages = []
    for sample in load_samples(samples_dir):
        if sample.accepted and sample.event is not None:  # never saved: see `accepted`
            # each sample twice, with and without a release dist and user of its own
            messages.append(wrap_event(sample.event, PROJECT_ID, rng)[1])
            messages.append(wrap_event(_varied(sample.event, rng), PROJECT_ID, rng)[1])
    # A variation Sentry's event schemas refuse (list tags beside bare-list breadcrumbs) is
    # never stored: it is left out.
    return [value for value in messages if _accepted(value)]


def _accepted(value: bytes) -> bool:
    try:
        build_event(parse(value))
    except BadMessage:
        return False
    return True


def _varied(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    varied = dict(event)
    varied.update(
        release=rng.choice(["1.0", "latest", "app@2.3.4"]),
        dist=rng.choice(["d1", "x" * 70]),
        user={"ip_address": "10.0.0.1"},
        tags=[["level", "fatal"], ["release", "old"], ["url", "mine"], ["os", "x"]],
    )
    return varied


def _storage(options: dict[str, Any]) -> MemoryStorage:
    storage = MemoryStorage()
    storage.add_organization(ORG_ID)
    storage.add_project(PROJECT_ID, ORG_ID)
    storage.options[PROJECT_ID] = options
    return storage


def _rows(job: Job) -> list[tuple[str, bytes]]:
    assert job.nodes is not None
    return [(node_id, zlib.decompress(base64.b64decode(data))) for node_id, data in job.nodes]


def _copy(job: Job) -> Job:
    """The job as decode made it, its event copied (key order kept)."""
    return Job(
        project_id=job.project_id,
        event_id=job.event_id,
        occurrence_id=job.occurrence_id,
        data=orjson.loads(orjson.dumps(job.data)),
        occurrence_json=job.occurrence_json,
        size=job.size,
        received=job.received,
        type_id=job.type_id,
    )


def _batches(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _compare(messages: list[bytes], options: dict[str, Any], monkeypatch: Any) -> int:
    monkeypatch.setattr(save, "inserted_now", lambda: INSERTED)
    decoder = MessageDecoder()
    # As the worker decodes them: each message prepared, then Relay and the Jobs per batch.
    prepared = [decoder.prepare(value) for value in messages]
    decoded = [
        job
        for batch in _batches([item for item in prepared if isinstance(item, Prepared)], 100)
        for job in decoder.finish(batch)
    ]
    jobs = [job for job in decoded if isinstance(job, Job)]
    assert len(jobs) == len(messages)
    references = [_copy(job) for job in jobs]

    storage, reference_storage = _storage(options), _storage(options)
    saver = OccurrencePipeline(storage)
    project: Project = reference_storage.projects_by_id[PROJECT_ID]
    user_agents = user_agent_contexts()
    for batch, reference_batch in zip(_batches(jobs, 100), _batches(references, 100), strict=True):
        saver.save(batch)
        assert [job.outcome for job in batch if job.outcome is not None] == []
        reference.prepare(
            reference_batch,
            {PROJECT_ID: project},
            reference_storage,
            user_agents,
            now=datetime.now(UTC),
            inserted=INSERTED,
        )

    compared = 0
    for job, expected in zip(jobs, references, strict=True):
        assert _rows(job) == _rows(expected), job.event_id
        for field in fields(Job):
            if field.name not in NOT_COMPARED:
                assert getattr(job, field.name) == getattr(expected, field.name), field.name
        compared += 1
    assert storage.release_rows.keys() == reference_storage.release_rows.keys()
    assert storage.dist_rows.keys() == reference_storage.dist_rows.keys()
    assert storage.environment_rows.keys() == reference_storage.environment_rows.keys()
    return compared


@pytest.mark.parametrize("options", [{}, OPTIONS], ids=["default plugins", "other plugins"])
def test_sample_events_are_stored_as_before(
    sample_messages: list[bytes], options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _compare(sample_messages, options, monkeypatch) == 87


@pytest.mark.parametrize("options", [{}, OPTIONS], ids=["default plugins", "other plugins"])
def test_sdk_events_are_stored_as_before(
    sdk_messages: list[bytes], options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _compare(sdk_messages, options, monkeypatch) == 300


_normalizer = EventNormalizer()


def _relay_output(raw: bytes) -> bytes:
    normalized = _normalizer.normalize_raw(raw, PROJECT_ID, normalize_user_agent=False)
    normalized.pop("received")  # the time of normalization
    return orjson.dumps(normalized)


def test_the_event_sent_to_relay_is_as_before(
    sample_messages: list[bytes], sdk_messages: list[bytes]
) -> None:
    """The same keys and values (their order aside: it never followed the event's, and Relay
    writes its output in its own order, which this checks on Relay's output too)."""
    for value in [*sample_messages, *sdk_messages[:50]]:
        built = build_event(parse(value))
        expected = reference.build_event(parse(value))
        assert isinstance(built, Occurrence) and not isinstance(expected, Skip)
        assert (built.occurrence_id, built.event_id, built.received) == (
            expected[0],
            expected[1],
            expected[3],
        )
        assert built.event == expected[2]
        assert _relay_output(orjson.dumps(built.event)) == _relay_output(
            orjson.dumps(dict(sorted(expected[2].items(), reverse=True)))
        )


# Property tests: the rewritten helpers against the old ones, on inputs wider than the samples.

_KEYS = st.sampled_from(["a", "b", "level", "os", "os.name", "url"])
_PAIRS = st.lists(st.none() | st.tuples(_KEYS | st.none(), st.text(max_size=3)).map(list))
_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["set", "pop", "get", "set_many"]),
        _KEYS,
        st.none() | st.text(max_size=3) | st.just("v" * 201),
        st.lists(st.tuples(_KEYS, st.none() | st.text(max_size=3)), max_size=4),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(_PAIRS, _EDITS)
def test_event_tags_edit_as_sentrys_helpers(pairs: list[Any], edits: list[Any]) -> None:
    data: dict[str, Any] = {"tags": [None if p is None else list(p) for p in pairs]}
    expected: dict[str, Any] = {"tags": [None if p is None else list(p) for p in pairs]}
    tags = EventTags(data["tags"])
    for operation, key, value, many in edits:
        if operation == "set":
            tags.set(key, value)
            reference.set_tag(expected, key, value)
        elif operation == "pop":
            tags.pop(key)
            reference.pop_tag(expected, key)
        elif operation == "get":
            assert tags.get(key) == reference.get_tag(expected, key)
        else:
            tags.set_many(many)
            for many_key, many_value in many:
                reference.set_tag(expected, many_key, many_value)
        assert data["tags"] == expected["tags"]


_SCALAR = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)
_CONTEXT = st.dictionaries(
    st.sampled_from(["type", "name", "version", "model", "family", "rooted", "id", "slug"]),
    _SCALAR | st.sampled_from(["os", "device", "runtime", "browser", "gpu", "app", "monitor"]),
    max_size=5,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["os", "device", "runtime", "browser", "gpu", "app", "x", "server-os"]),
        st.none() | _CONTEXT,
        max_size=5,
    )
)
def test_context_tags_as_before(value: dict[str, Any]) -> None:
    assert contexts.context_tags(value) == list(reference.context_tags(value))


_FRAME = st.none() | st.dictionaries(
    st.sampled_from([*interfaces.FRAME_FIELDS[:6], "in_app", "function", "other"]),
    _SCALAR,
    max_size=5,
)
_EVENT: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "request": st.none()
        | st.just("x")
        | st.dictionaries(st.sampled_from(["url", "method", "query_string"]), _SCALAR),
        "sdk": st.none() | st.dictionaries(st.sampled_from(["name", "version", "x"]), _SCALAR),
        "stacktrace": st.none() | st.fixed_dictionaries({"frames": st.lists(_FRAME, max_size=4)}),
        "exception": st.none()
        | st.fixed_dictionaries(
            {
                "values": st.lists(
                    st.none()
                    | st.fixed_dictionaries(
                        {},
                        optional={
                            "mechanism": st.none()
                            | st.dictionaries(st.sampled_from(["type", "handled"]), _SCALAR),
                            "stacktrace": st.fixed_dictionaries(
                                {"frames": st.lists(_FRAME, max_size=3)}
                            ),
                        },
                    ),
                    max_size=3,
                )
            }
        ),
        "contexts": st.none() | st.dictionaries(st.sampled_from(["os", "trace"]), _CONTEXT),
        "user": st.none() | st.just({"id": "1"}) | st.just(3),
        "breadcrumbs": st.none() | st.just({"values": []}),
        "debug_meta": st.just({}),
        "extra": st.just({"a": 1}),
    },
)


@settings(max_examples=400, deadline=None)
@given(_EVENT, st.randoms(use_true_random=False))
def test_event_interfaces_as_before(event: dict[str, Any], rng: random.Random) -> None:
    keys = list(event)
    rng.shuffle(keys)  # ties in score go by the event's order
    data = orjson.loads(orjson.dumps({key: event[key] for key in keys}))
    expected = orjson.loads(orjson.dumps(data))
    assert interfaces.event_interfaces(data) == reference.event_interfaces(expected)
    assert orjson.dumps(data) == orjson.dumps(expected)  # the same fields filled, in order


_HEADER = st.sampled_from(
    ["User-Agent", "user-agent", "USER-AGENT", "Sec-CH-UA", "sec-ch-ua-platform", "Accept"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(_HEADER | st.none(), min_size=1, max_size=1).flatmap(
            lambda name: st.tuples(st.just(name[0]), st.none() | st.text(max_size=3)).map(list)
        )
        | st.just(["only one"])
        | st.just("not a pair"),
        max_size=5,
    ),
    st.booleans(),
)
def test_user_agent_info_as_before(headers: list[Any], has_contexts: bool) -> None:
    event: dict[str, Any] = {"request": {"headers": headers}}
    if has_contexts:
        event["contexts"] = {}
    assert user_agent.user_agent_info(event) == reference.user_agent_info(event)
    assert user_agent.mergeable(event) == reference.mergeable(event)
