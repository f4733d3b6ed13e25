"""Relay's store normalizer with the arguments Sentry uses (reference §2.0, CONTRACT §3).

Where it runs: the Relay calls of a batch one after the other, in `MessageDecoder.finish`, after
batching and before the save (`strategy/normalize_step.py`, `NormalizeBatch`): on the consumer's main
thread, or in the worker's Relay process (`relay_process.py`, which says when and why). An event
Relay rejects becomes a dead letter in its batch there, before the save step sees the batch, and
normalization overlaps with the save thread: the Relay call is a C call that releases the GIL,
so normalizing the next batch proceeds while the save thread saves the previous one. The
user-agent contexts, a cheap pure merge from a cache, are added on the save thread, per batch
(`save.py`): right after a Relay call the interpreter runs with cold caches, and the merge
costs more per event there than in a loop over the batch.

Arguments as in Sentry's `EventManager._normalize_impl` for an occurrence (no project config, no
client, no key, protocol "5", `remove_other=False` so keys such as `metadata` survive, limits of
30 days in the past and 60 s in the future, trimming on), with two differences:

* user agents: Relay's own parsing is off and `UserAgentContexts` adds the same contexts from a
  cache of parsed user agents;
* GeoIP: Sentry passes its GeoIP database when configured; the worker has none, so `user.geo`
  is never filled in.

`type` is restored to "generic" afterwards, as Sentry does.

The call itself skips one pass of the library's `normalize_event`: before handing the JSON to
Relay, the library rewrites it in place for what Python's `json` module may emit and Relay's
parser refuses (the tokens `NaN` and `Infinity`, integers beyond 64 bits), byte by byte over a
copy of the document. The worker encodes every event with orjson, which emits none of those
(it writes NaN as null and refuses integers beyond 64 bits), so the pass can change nothing
here, and skipping it saves a copy of every event and a scan over it.
`relay_normalize` calls the same Relay function on the JSON as it is, and reads Relay's output
without copying it (tests/unit/pipeline/test_normalize.py checks the result is the library's
on every sample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from sentry_relay.exceptions import RelayError
from sentry_relay.processing import StoreNormalizer
from sentry_relay.utils import rustcall as _untyped_rustcall

from consumer.errors import BadMessage
from consumer.pipeline.user_agent import UserAgentContexts, mergeable

try:  # the library's own bindings: the function `StoreNormalizer.normalize_event` calls
    from sentry_relay._lowlevel import ffi as _ffi
    from sentry_relay._lowlevel import lib as _lib

    _NORMALIZE_EVENT = _lib.relay_store_normalizer_normalize_event
except (ImportError, AttributeError):  # pragma: no cover - a release that moved them
    _NORMALIZE_EVENT = None
# Calls a Relay function, raising its error as the matching RelayError.
_rustcall: Callable[..., Any] = _untyped_rustcall

MAX_SECS_IN_FUTURE = 60
MAX_SECS_IN_PAST = 30 * 24 * 3600
# Types Relay does not know and rewrites, which Sentry puts back after normalizing.
RESTORED_TYPES = frozenset({"generic", "feedback"})

_T = TypeVar("_T")


def store_normalizer(project_id: int, *, normalize_user_agent: bool) -> Any:
    return StoreNormalizer(
        project_id=project_id,
        client_ip=None,
        client=None,
        key_id=None,
        grouping_config=None,
        protocol_version="5",
        is_renormalize=False,
        remove_other=False,
        normalize_user_agent=normalize_user_agent,
        sent_at=None,
        max_secs_in_future=MAX_SECS_IN_FUTURE,
        max_secs_in_past=MAX_SECS_IN_PAST,
        enable_trimming=True,
        json_dumps=orjson.dumps,
    )


def _relay_call(normalizer: Any, raw_event: bytes, read: Callable[[memoryview], _T]) -> _T:
    """Relay's normalization of `raw_event`, its output (JSON) given to `read` as a view of
    Relay's buffer, freed after. Raises RelayError as the library does."""
    event = _ffi.new("RelayStr *")
    data = _ffi.from_buffer(raw_event)  # read only: the function takes a const string
    event.data = data
    event.len = len(raw_event)
    output = _rustcall(_NORMALIZE_EVENT, normalizer._get_objptr(), event)
    try:
        return read(memoryview(_ffi.buffer(output.data, output.len)))
    finally:
        if output.owned:
            _lib.relay_str_free(_ffi.addressof(output))


def relay_normalize(normalizer: Any, raw_event: bytes) -> dict[str, Any]:
    """`normalizer.normalize_event(raw_event=raw_event)` for JSON encoded by orjson, without
    the legacy-Python-JSON pass (see the module's docstring). Raises RelayError as it does."""
    if _NORMALIZE_EVENT is None:  # pragma: no cover - bindings moved: the library's own path
        result: dict[str, Any] = normalizer.normalize_event(
            raw_event=raw_event, json_loads=orjson.loads
        )
        return result
    normalized: dict[str, Any] = _relay_call(normalizer, raw_event, orjson.loads)
    return normalized


def relay_normalize_json(normalizer: Any, raw_event: bytes) -> bytes:
    """`relay_normalize`, but Relay's output as it is, JSON (what the Relay process returns)."""
    if _NORMALIZE_EVENT is None:  # pragma: no cover - bindings moved: the library's own path
        return orjson.dumps(relay_normalize(normalizer, raw_event))
    return _relay_call(normalizer, raw_event, bytes)


def encode_event(event: dict[str, Any]) -> bytes:
    """The event as the JSON Relay reads; BadMessage("normalization_failed") for an event orjson
    cannot encode (nested past 254 levels, integers beyond 64 bits), which Relay never sees."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError as error:
        raise BadMessage("normalization_failed", str(error)) from None


def _relay_message(error: RelayError) -> str:
    # str(error) appends a Rust backtrace; the message's first line is what a dead letter needs.
    message = str(error.message or "")
    return message.splitlines()[0] if message else type(error).__name__


def user_agent_contexts(maxsize: int = 4096) -> UserAgentContexts:
    """A user-agent cache whose misses ask Relay (its own normalizer: one cache per thread)."""
    probe_normalizer = store_normalizer(0, normalize_user_agent=True)

    def normalize_probe(event: dict[str, Any]) -> dict[str, Any]:
        return relay_normalize(probe_normalizer, orjson.dumps(event))

    return UserAgentContexts(normalize_probe, maxsize)


class EventNormalizer:
    """Normalizes events as Sentry's EventManager does, but for the user-agent contexts, which
    `UserAgentContexts.apply` adds later (the save step does, per batch). Not thread-safe: one
    per thread.

    `normalize` raises BadMessage("normalization_failed") when Relay (or the JSON encoding of
    the event for it) rejects the event.
    """

    def __init__(self, *, max_projects: int = 1024) -> None:
        self.max_projects = max_projects
        self._normalizers: dict[tuple[int, bool], Any] = {}

    def store_normalizer(self, project_id: int, normalize_user_agent: bool) -> Any:
        """Relay's normalizer for the project, made once."""
        key = (project_id, normalize_user_agent)
        normalizer = self._normalizers.get(key)
        if normalizer is None:
            if len(self._normalizers) >= self.max_projects:
                self._normalizers.clear()
            normalizer = self._normalizers[key] = store_normalizer(
                project_id, normalize_user_agent=normalize_user_agent
            )
        return normalizer

    def _relay(
        self,
        call: Callable[[Any, bytes], _T],
        raw_event: bytes,
        project_id: int,
        normalize_user_agent: bool,
    ) -> _T:
        """`call` (one of the `relay_normalize` functions) with the project's normalizer, Relay's
        refusal raised as BadMessage("normalization_failed")."""
        try:
            return call(self.store_normalizer(project_id, normalize_user_agent), raw_event)
        except RelayError as error:
            raise BadMessage("normalization_failed", _relay_message(error)) from None

    def normalize_raw(
        self, raw_event: bytes, project_id: int, *, normalize_user_agent: bool
    ) -> dict[str, Any]:
        return self._relay(relay_normalize, raw_event, project_id, normalize_user_agent)

    def relay_json(self, raw: bytes, project_id: int) -> bytes:
        """Relay's output for an event encoded by orjson, as JSON, user-agent parsing off: the
        first half of `normalize_json`, which `complete` finishes (the Relay process's part)."""
        return self._relay(relay_normalize_json, raw, project_id, False)

    def normalize(self, event: dict[str, Any], project_id: int) -> dict[str, Any]:
        """The normalized event (a new dict), complete but for the user-agent contexts."""
        return self.normalize_json(encode_event(event), project_id, event.get("type"))

    def normalize_json(self, raw: bytes, project_id: int, event_type: Any) -> dict[str, Any]:
        """`normalize` for an event already encoded by orjson, whose `type` is `event_type`; an
        event the user-agent contexts could not be merged into is normalized with Relay's own
        parsing at once."""
        return self.complete(
            self.normalize_raw(raw, project_id, normalize_user_agent=False),
            raw,
            project_id,
            event_type,
        )

    def complete(
        self, result: dict[str, Any], raw: bytes, project_id: int, event_type: Any
    ) -> dict[str, Any]:
        """Relay's result for `raw` (user-agent parsing off) made `normalize_json`'s."""
        if not mergeable(result):
            # Rare: Relay's own parsing now; `UserAgentContexts.apply` is a no-op on the result.
            result = self.normalize_raw(raw, project_id, normalize_user_agent=True)
        if event_type in RESTORED_TYPES:
            result["type"] = event_type
        return result
