"""Events of any shape in the fields the steps read: each is either a bad message (with a
reason) or saved, with a stored document that reads back; never an exception in between, which
would stop the worker on that message at every restart.

Relay's normalization fixes most types before the steps run; what it leaves is what this
explores (arbitrary context fields, header pairs, frames, mechanisms, tags).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consumer.errors import BadMessage
from consumer.pipeline.job import Job
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.message import MessageDecoder, Skip
from consumer.pipeline.save import OccurrencePipeline
from consumer.storage.nodestore import event_node_id
from tests.unit.pipeline.builders import ORG_ID, PROJECT_ID, encode, occurrence
from tests.unit.pipeline.builders import event as event_body

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what JSON encoders write
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["", " ", "1.0", "x" * 250, "Mozilla/5.0 (X11; Linux x86_64) Firefox/118.0"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _object(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), _JSON, max_size=len(keys))


_FRAME = _object(["function", "module", "filename", "abs_path", "in_app", "platform", "lineno"])
_STACKTRACE = st.fixed_dictionaries(
    {}, optional={"frames": st.lists(st.one_of(st.none(), _FRAME, _JSON), max_size=4)}
)
_MECHANISM = _object(["type", "handled", "synthetic", "data", "description"])
_EXCEPTION = st.fixed_dictionaries(
    {},
    optional={
        "type": _JSON,
        "value": _JSON,
        "module": _JSON,
        "stacktrace": st.one_of(_STACKTRACE, _JSON),
        "mechanism": st.one_of(_MECHANISM, _JSON),
    },
)
_HEADER = st.one_of(
    st.tuples(st.sampled_from(["User-Agent", "user-agent", "Referer", "Sec-CH-UA"]), _JSON).map(
        list
    ),
    st.lists(_JSON, max_size=3),
    st.none(),
)
_REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "url": st.one_of(_JSON, st.sampled_from(["http://example.com/a?b=c", "/relative"])),
        "method": _JSON,
        "headers": st.one_of(st.lists(_HEADER, max_size=3), _object(["User-Agent", "X-A"])),
        "query_string": _JSON,
        "data": _JSON,
        "cookies": _JSON,
    },
)
_CONTEXT_FIELDS = ["type", "name", "version", "model", "family", "rooted", "device_app_hash"]
_CONTEXTS = st.dictionaries(
    st.sampled_from(["os", "browser", "device", "runtime", "app", "gpu", "monitor", "custom"]),
    st.one_of(st.none(), _object([*_CONTEXT_FIELDS, "vendor_name", "id", "slug"]), _JSON),
    max_size=4,
)
_TAGS = st.one_of(
    st.lists(st.one_of(st.none(), st.tuples(_JSON, _JSON).map(list), _JSON), max_size=3),
    st.dictionaries(st.text(max_size=6), _JSON, max_size=3),
)
_EVENT_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "exception": st.one_of(
            st.fixed_dictionaries(
                {"values": st.lists(st.one_of(st.none(), _EXCEPTION), max_size=3)}
            ),
            _JSON,
        ),
        "stacktrace": st.one_of(_STACKTRACE, _JSON),
        "request": st.one_of(_REQUEST, _JSON),
        "contexts": st.one_of(_CONTEXTS, _JSON),
        "user": st.one_of(_object(["id", "email", "username", "ip_address", "name"]), _JSON),
        "tags": _TAGS,
        "sdk": st.one_of(_object(["name", "version", "integrations"]), _JSON),
        "release": _JSON,
        "dist": _JSON,
        "environment": _JSON,
        "logger": _JSON,
        "transaction": _JSON,
        "level": _JSON,
        "culprit": _JSON,
        # any other platform is a bad message, which the message tests cover
        "platform": st.sampled_from(["python", "javascript", "node", "cocoa", "native", "other"]),
        "message": _JSON,
        "logentry": st.one_of(_object(["formatted", "message", "params"]), _JSON),
        "fingerprint": _JSON,
    },
)


def _decode(decoder: MessageDecoder, value: bytes) -> Job | Skip | BadMessage:
    try:
        return decoder(value)
    except BadMessage as bad:
        return bad


@pytest.fixture(scope="module")
def module_decoder() -> MessageDecoder:
    return MessageDecoder()


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(fields=_EVENT_FIELDS)
def test_any_event_shape_is_saved_or_a_bad_message(
    module_decoder: MessageDecoder, fields: dict[str, Any]
) -> None:
    message = occurrence(event_body(**fields))
    job = _decode(module_decoder, encode(message))
    if isinstance(job, BadMessage):
        assert job.reason
        event(f"bad message: {job.reason}")  # --hypothesis-show-statistics
        return
    assert isinstance(job, Job)
    storage = MemoryStorage()
    storage.add_organization(ORG_ID)
    storage.add_project(PROJECT_ID, ORG_ID)
    OccurrencePipeline(storage).save([job])
    assert job.outcome is None
    event("saved")
    stored = storage.nodestore.document(event_node_id(PROJECT_ID, message["event_id"]))
    assert stored["event_id"] == message["event_id"]
    assert isinstance(stored["title"], str)
    assert isinstance(stored["culprit"], str)
    # Relay leaves a pair, or a key or value, that it had to drop as None; Sentry keeps them
    for pair in stored["tags"]:
        assert pair is None or all(part is None or type(part) is str for part in pair)
