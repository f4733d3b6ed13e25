"""Property tests where the input space is wide: the context-tag formatter against Python's
`string.Formatter` (what Sentry formats with), and the stored event document against a plain
encoding of the event."""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.pipeline.contexts import CONTEXT_TAG_FORMATS, context_tags
from consumer.pipeline.event_metrics import apply_event_metrics
from consumer.pipeline.job import Job
from consumer.pipeline.nodes import event_document
from consumer.storage.nodestore import decode_blob, encode_blob


class _SentryFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        if not format_spec and isinstance(value, bool):
            return "yes" if value else "no"
        return super().format_field(value, format_spec)


def _sentry_context_tags(contexts: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Sentry's way, restated: drop None fields, `vformat`, KeyError skips, strip, non-empty."""
    for alias, context in contexts.items():
        if context is None:
            continue
        data = {key: value for key, value in context.items() if value is not None}
        for field, fmt in CONTEXT_TAG_FORMATS.get(context.get("type", alias), {}).items():
            try:
                value = _SentryFormatter().vformat(fmt, (), data).strip()
            except KeyError:
                continue
            if value:
                yield (f"{alias}.{field}" if field else alias, value)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["", " ", "  padded  "]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_FIELDS = st.sampled_from(
    [
        "name",
        "version",
        "rooted",
        "model",
        "family",
        "vendor_name",
        "id",
        "slug",
        "device_app_hash",
        "x",
    ]
)
_CONTEXT = st.one_of(
    st.none(),
    st.builds(
        lambda fields, kind: {**fields, **({"type": kind} if kind is not None else {})},
        st.dictionaries(_FIELDS, _VALUES, max_size=6),
        st.one_of(st.none(), st.sampled_from([*CONTEXT_TAG_FORMATS, "custom"])),
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*CONTEXT_TAG_FORMATS, "server-os", "x"]), _CONTEXT, max_size=5)
)
def test_context_tags_format_as_python_does(contexts: dict[str, Any]) -> None:
    assert list(context_tags(contexts)) == list(_sentry_context_tags(contexts))


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=6).filter(lambda k: k not in ("_metrics", "nodestore_insert")),
        _JSON,
        max_size=6,
    ),
    st.one_of(st.none(), st.just({}), st.dictionaries(st.text(max_size=6), _JSON, max_size=2)),
    st.booleans(),
    st.floats(min_value=0, max_value=4e9),
)
def test_the_stored_document_is_the_event(
    fields: dict[str, Any], event_metrics: Any, metrics_first: bool, inserted: float
) -> None:
    data: dict[str, Any] = {}
    if metrics_first:
        data["_metrics"] = event_metrics
    data.update(fields)
    if not metrics_first and event_metrics is not None:
        data["_metrics"] = event_metrics
    job = Job(1, "e" * 32, "o" * 32, data, b"{}")
    apply_event_metrics([job])
    document = event_document(job, inserted)
    expected = orjson.dumps(data)
    assert orjson.dumps(document) == expected
    assert decode_blob(encode_blob(document))[0] == orjson.loads(expected)
