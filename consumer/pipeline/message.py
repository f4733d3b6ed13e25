"""Message to Job: decode, validate, build, normalize and pull apart one `ingest-occurrences`
message (CONTRACT §2, reference §7.2 and §2.0).

Runs in two halves (`MessageDecoder`): per message, on the consumer's main thread, up to the
event built for Relay; then per batch the Relay calls and the Jobs, on the main thread or, with
a Relay process, on the normalize thread (see `normalize.py` and `relay_process.py`); the
user-agent contexts and the pulling apart of the event (reference §2.0) follow per batch on the
save thread (`save.py`). No I/O but the Relay process's pipe. Raises BadMessage with a stable
`reason` for anything that can never be saved; returns a Skip for messages that are valid but
not saved. Whether the project and organization exist, or were deleted, is decided per batch by
the save step.

The event is built as Sentry's occurrence consumer builds it: `event_id`, `level` (the
occurrence's, default "info"; the event's own is ignored), `platform`, `received`, `tags`,
`timestamp`, then only the optional keys Sentry forwards (everything else in the event, such as
`exception`, `logentry`, `fingerprint`, `culprit` or `title`, is dropped), and
`metadata = {"title": issue_title}`; `type` is "generic" and `project_id` is left out, as
`save_event_from_occurrence` does before normalizing.

Each of Sentry's intake rules (`issues/occurrence_consumer.py` and `issue_occurrence.py`
`from_dict`, cited in `build_event`) is applied here, in Sentry's order: what Sentry saves is
saved, what it refuses or drops is a BadMessage whose reason names the rule. The event is
validated against Sentry's event schemas (`event_schema.py`), and the occurrence document is
built as Sentry's `IssueOccurrence.to_dict` writes it (`occurrence.py`). Whether an unreleased
group type may be ingested depends on the organization, so the save step decides that.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sentry_kafka_schemas import get_codec
from sentry_kafka_schemas.codecs import ValidationError

from consumer.errors import BadMessage
from consumer.pipeline import group_types
from consumer.pipeline.event_schema import EventSchemas
from consumer.pipeline.job import Job
from consumer.pipeline.normalize import EventNormalizer, encode_event
from consumer.pipeline.occurrence import occurrence_document
from consumer.pipeline.relay_process import RelayProcess
from consumer.storage.nodestore import dumps

_CODEC = get_codec("ingest-occurrences")

DEFAULT_LEVEL = "info"
# The event keys Sentry's occurrence consumer forwards when present (`_get_kwargs`).
OPTIONAL_EVENT_KEYS = (
    "breadcrumbs",
    "contexts",
    "debug_meta",
    "dist",
    "environment",
    "extra",
    "modules",
    "release",
    "request",
    "sdk",
    "server_name",
    "stacktrace",
    "trace_id",
    "transaction",
    "user",
)

_OPTIONAL_EVENT_KEYS = frozenset(OPTIONAL_EVENT_KEYS)


@dataclass(frozen=True, slots=True)
class Skip:
    """A valid message that is deliberately not saved; `reason` is its metric label."""

    reason: str


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_HEX_DIGITS = "0123456789abcdef"


def _hex_uuid(raw: Any, field_name: str) -> str:
    """The UUID as 32 lowercase hex digits (`UUID(raw).hex`); BadMessage if it is none."""
    if not isinstance(raw, str):
        raise BadMessage("invalid_id", f"{field_name} must be a UUID string")
    if len(raw) == 32 and not raw.strip(_HEX_DIGITS):
        # Already in that form (32 lowercase hex digits), checked with a string method: skip
        # the slower general parser.
        return raw
    try:
        return uuid.UUID(raw).hex
    except ValueError:
        raise BadMessage("invalid_id", f"{field_name} {raw[:64]!r} is not a UUID") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(value: bytes | None) -> dict[str, Any]:
    """The message as a dict, valid against the topic's schema."""
    if value is None:
        raise BadMessage("empty_message", "the message has no value")
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise BadMessage("invalid_json", str(error)) from None
    if not isinstance(message, dict):
        raise BadMessage("not_an_object", f"the message is a JSON {type(message).__name__}")
    try:
        _CODEC.validate(message)
    except ValidationError as error:
        raise BadMessage("schema_violation", str(error.__cause__ or error)) from None
    return message


class Occurrence(NamedTuple):
    """What an occurrence message yields before normalization."""

    occurrence_id: str
    event_id: str
    # The event to save; None for Sentry's buffered-spans path, which saves no event.
    event: dict[str, Any] | None
    received: Any
    # The occurrence document as Sentry's `IssueOccurrence.to_dict` writes it.
    document: dict[str, Any]


_MISSING: Any = object()
# The type of every event an occurrence carries to Relay (which rewrites it; Sentry puts it back).
BUILT_EVENT_TYPE = "generic"


def _invalid_field(message: dict[str, Any], name: str, expected: str) -> BadMessage:
    """Why `message[name]` failed its check: missing, or not what was `expected`."""
    if name not in message:
        return BadMessage("missing_field", f"{name} is required")
    value = message[name]
    return BadMessage("invalid_field", f"{name} must be {expected}, not {type(value).__name__}")


_SCHEMAS = EventSchemas()


def build_event(message: dict[str, Any], schemas: EventSchemas = _SCHEMAS) -> Occurrence | Skip:
    """The event to normalize, its ids and the occurrence document, or why the message is
    skipped. Raises BadMessage for what Sentry's consumer refuses or drops.

    Line numbers are of `src/sentry/issues/occurrence_consumer.py` at `7698ea90003c`
    (unchanged in these rules at `4b980c7c015f`, which only adds an option-gated rate limit).
    """
    get = message.get
    # :346-360: only an absent key defaults to "occurrence"; any other value is dropped.
    payload_type = get("payload_type", "occurrence")
    if payload_type != "occurrence":
        if payload_type == "status_change":
            return Skip("status_change")
        raise BadMessage("unknown_payload_type", f"payload_type {str(payload_type)[:64]!r}")

    # Each type check tries the exact JSON type first, without a call, and asks the helper only
    # otherwise: a valid message, the usual case, never calls the helper.

    # The schema's "integer" also admits 5.0 (which would name the wrong nodestore nodes) and
    # any size (a project id beyond PostgreSQL's bigint fails every lookup, stopping the batch).
    project_id = get("project_id", _MISSING)
    if type(project_id) is not int and not _is_int(project_id):
        raise _invalid_field(message, "project_id", "an integer")
    if not 0 <= project_id < 2**63:
        raise BadMessage("invalid_field", f"project_id {project_id} is out of range")
    # :164: `UUID(id).hex`.
    occurrence_id = _hex_uuid(message["id"], "id")
    # :167-168, :172-173: read with [], so required; any value (null included) passes here.
    for name in ("issue_title", "subtitle", "type", "detection_time"):
        if name not in message:
            raise BadMessage("missing_field", f"{name} is required")
    issue_title = message["issue_title"]
    # :189 and :302: `get_group_type_by_type_id` raises for an unregistered id.
    issue_type = message["type"]
    group_type = group_types.get(issue_type) if type(issue_type) is int else None
    if group_type is None:
        raise BadMessage("unknown_group_type", f"type {str(issue_type)[:32]} is not registered")
    # :174: the level as given, "info" only when absent (a null reaches the event's schema).
    level = get("level", DEFAULT_LEVEL)
    # :180-181: a truthy top-level event_id must be a UUID.
    raw_occurrence_event_id = get("event_id")
    occurrence_event_id = (
        _hex_uuid(raw_occurrence_event_id, "event_id") if raw_occurrence_event_id else None
    )

    if "event" not in message:
        # :266-270: without an event, the top-level event_id names the stored event.
        if occurrence_event_id is None:
            raise BadMessage("missing_event_id", "an occurrence without event needs event_id")
        occurrence_document(message, occurrence_id, occurrence_event_id, group_type)
        return Skip("no_event")  # the stored event's lookup is not built yet
    event = message["event"]
    # :193-194: `event.get(...)` on anything but an object fails.
    if not isinstance(event, dict):
        raise BadMessage("invalid_event", f"event is a JSON {type(event).__name__}")
    event_project_id = event.get("project_id")
    # :194-197
    if (
        type(event_project_id) is not int and not _is_int(event_project_id)
    ) or event_project_id != project_id:
        raise BadMessage(
            "project_mismatch",
            f"project_id in occurrence ({project_id}) differs from the event's "
            f"({str(event_project_id)[:32]})",
        )
    raw_event_id = event.get("event_id")
    # :198-199
    if occurrence_event_id is None and not raw_event_id:
        raise BadMessage("missing_event_id", "neither the occurrence nor its event has event_id")
    # :205: the event's own id is parsed whatever the occurrence says, so it must be there.
    if not raw_event_id:
        raise BadMessage("missing_event_id", "event.event_id is required")
    if raw_event_id == raw_occurrence_event_id and occurrence_event_id is not None:
        event_id = occurrence_event_id  # the usual case: the same id, parsed once
    else:
        event_id = _hex_uuid(raw_event_id, "event.event_id")
    # :201-202 then `process_event_and_issue_occurrence` (:110-113): without a top-level id the
    # occurrence takes the event's id as written, which must then equal its hex form.
    document_event_id = occurrence_event_id if occurrence_event_id is not None else raw_event_id
    if document_event_id != event_id:
        raise BadMessage(
            "event_id_mismatch",
            f"event_id in occurrence ({str(document_event_id)[:40]}) differs from the event's "
            f"({event_id})",
        )
    # :209: an absent `received` defaults to a datetime object, which both schemas refuse.
    received = event.get("received", _MISSING)
    if received is _MISSING:
        raise BadMessage("invalid_event_payload", "event.received is required")

    data: dict[str, Any] = {
        "event_id": event_id,
        "level": level,
        "project_id": project_id,
        "platform": event.get("platform"),
        "received": received,
        "tags": event.get("tags"),
        "timestamp": event.get("timestamp"),
    }
    for key, value in event.items():
        if key in _OPTIONAL_EVENT_KEYS:
            data[key] = value
    # :235-254: valid against the event schema, or else the legacy one.
    error = schemas.error(data)
    if error is not None:
        raise BadMessage("invalid_event_payload", error)
    document = occurrence_document(message, occurrence_id, event_id, group_type)
    # :261-265, :312-313: buffered spans save no event, only the occurrence.
    if get("is_buffered_spans") is True:
        return Occurrence(occurrence_id, event_id, None, received, document)
    del data["project_id"]  # `save_event_from_occurrence` pops it before normalizing
    data["metadata"] = {"title": issue_title}
    data["type"] = BUILT_EVENT_TYPE
    return Occurrence(occurrence_id, event_id, data, received, document)


@dataclass(slots=True)
class Prepared:
    """A message ready for Relay: what `MessageDecoder.prepare` makes of it, and what
    `MessageDecoder.finish` turns into a Job together with the rest of its batch.

    Only JSON is kept, no parsed document: a prepared message waits in its batch for up to a
    batch of others, and the parsed message, freed as soon as it is encoded, leaves its memory
    warm for the next message's parse (parsed documents kept across the batch would make every
    allocation of the next parse land in cold memory).
    """

    project_id: int
    event_id: str
    occurrence_id: str
    # The event to normalize, as JSON; None once Relay has read it (`finish` drops it there),
    # and for a buffered-spans occurrence, which saves no event (`buffered`).
    event_json: bytes | None
    # The occurrence document as the nodestore stores it.
    occurrence_json: bytes
    size: int
    received: Any
    decode_seconds: float
    type_id: int = 0
    buffered: bool = False


class MessageDecoder:
    """Message to Job in two halves, with its cache of Relay normalizers (per project). `prepare`
    and `finish` may run on different threads, each half on one thread at a time.

    `prepare` runs per message (parse, validate, build the event); `finish` runs per batch:
    first every Relay call, one after the other, then every Job. Relay's native code evicts the
    interpreter's code and data from the CPU's caches, so Python run right after each Relay call
    is slower than the same code in a loop; in phases, each phase keeps its own code warm.
    Calling the decoder does both halves for one message.
    """

    def __init__(
        self, normalizer: EventNormalizer | None = None, relay: RelayProcess | None = None
    ) -> None:
        self.normalizer = normalizer or EventNormalizer()
        self.relay = relay  # Relay's calls made in that process rather than in this thread

    def prepare(self, value: bytes | None) -> Prepared | Skip:
        """The message checked and its event built, or why it is skipped; BadMessage if it can
        never be saved."""
        started = time.perf_counter()
        message = parse(value)
        built = build_event(message)
        if isinstance(built, Skip):
            return built
        try:
            # Encoded once, here: the proof that it can be stored, and what the nodestore stores.
            occurrence_json = dumps(built.document)
        except orjson.JSONEncodeError as error:
            # orjson reads 1024 levels of nesting but writes only 254: an occurrence between
            # the two would fail its nodestore write on every retry and stop the partition.
            raise BadMessage(
                "too_deeply_nested", f"the occurrence document cannot be stored: {error}"
            ) from None
        del message  # the parsed message dies here, before the event's JSON is made
        buffered = built.event is None
        event_json = None if built.event is None else encode_event(built.event)  # what Relay reads
        return Prepared(
            built.document["project_id"],
            built.event_id,
            built.occurrence_id,
            event_json,
            occurrence_json,
            len(value or b""),
            built.received,
            time.perf_counter() - started,
            built.document["type"],
            buffered,
        )

    def finish(self, batch: Sequence[Prepared]) -> list[Job | BadMessage]:
        """Normalize every prepared message, then make its Job: one result per message, in
        order, a BadMessage for an event Relay rejects (`normalization_failed`)."""
        clock = time.perf_counter
        events = [prepared for prepared in batch if not prepared.buffered]
        if self.relay is None:
            normalized, timed = self._normalize_here(events)
        else:
            normalized, timed = self._normalize_in_relay_process(events, self.relay)
        # A buffered-spans occurrence has no event to normalize: an empty one stands in.
        outputs, timings = iter(normalized), iter(timed)
        results: list[dict[str, Any] | BadMessage] = [
            {} if p.buffered else next(outputs) for p in batch
        ]
        normalize_seconds = [0.0 if p.buffered else next(timings) for p in batch]

        started = clock()
        jobs: list[Job | BadMessage] = [
            result
            if isinstance(result, BadMessage)
            else Job(
                project_id=prepared.project_id,
                event_id=prepared.event_id,
                occurrence_id=prepared.occurrence_id,
                data=result,
                occurrence_json=prepared.occurrence_json,
                size=prepared.size,
                received=prepared.received,
                type_id=prepared.type_id,
                buffered=prepared.buffered,
            )
            for prepared, result in zip(batch, results, strict=True)
        ]
        share = (clock() - started) / len(batch) if batch else 0.0
        for prepared, job, seconds in zip(batch, jobs, normalize_seconds, strict=True):
            if isinstance(job, Job):
                job.decode_seconds = prepared.decode_seconds + share
                job.normalize_seconds = seconds
        return jobs

    def _normalize_here(
        self, batch: Sequence[Prepared]
    ) -> tuple[list[dict[str, Any] | BadMessage], list[float]]:
        """Relay's calls one after the other in this thread, each timed."""
        clock = time.perf_counter
        normalize = self.normalizer.normalize_json
        results: list[dict[str, Any] | BadMessage] = []
        seconds: list[float] = []
        for prepared in batch:
            started = clock()
            event = _take_event(prepared)
            results.append(_outcome(normalize, event, prepared.project_id, BUILT_EVENT_TYPE))
            del event  # the event's JSON dies here, once Relay has read it
            seconds.append(clock() - started)
        return results, seconds

    def _normalize_in_relay_process(
        self, batch: Sequence[Prepared], relay: RelayProcess
    ) -> tuple[list[dict[str, Any] | BadMessage], list[float]]:
        """Relay's calls for the whole batch in the Relay process, its outputs parsed here; each
        event timed as its share of the batch."""
        started = time.perf_counter()
        request = [(prepared.project_id, _take_event(prepared)) for prepared in batch]
        replies = relay.normalize(request)
        results: list[dict[str, Any] | BadMessage] = [
            BadMessage("normalization_failed", reply)
            if isinstance(reply, str)
            else _outcome(self._complete, reply, event, project_id)
            for (project_id, event), reply in zip(request, replies, strict=True)
        ]
        del request, replies
        share = (time.perf_counter() - started) / len(batch) if batch else 0.0
        return results, [share] * len(batch)

    def _complete(self, output: bytes, event: bytes, project_id: int) -> dict[str, Any]:
        """Relay's output from the Relay process, finished as `normalize_json` finishes it."""
        return self.normalizer.complete(orjson.loads(output), event, project_id, BUILT_EVENT_TYPE)

    def __call__(self, value: bytes | None) -> Job | Skip:
        """Both halves for one message; raises BadMessage as either does."""
        prepared = self.prepare(value)
        if isinstance(prepared, Skip):
            return prepared
        (result,) = self.finish([prepared])
        if isinstance(result, BadMessage):
            raise result
        return result


def _take_event(prepared: Prepared) -> bytes:
    """The prepared event's JSON, dropped from the message: it is normalized once."""
    event, prepared.event_json = prepared.event_json, None
    assert event is not None, "a prepared message is finished once"
    return event


def _outcome(normalize: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any] | BadMessage:
    """`normalize(*args)`, or the BadMessage of an event that cannot be normalized."""
    try:
        return normalize(*args)
    except BadMessage as bad:
        return bad.with_traceback(None)  # its frames would keep the event
    except RecursionError:
        return BadMessage("too_deeply_nested", "the event nests too deeply")


_decoder: MessageDecoder | None = None


def process_decoder() -> MessageDecoder:
    """The process's decoder (created on first use; main thread only)."""
    global _decoder
    if _decoder is None:
        _decoder = MessageDecoder()
    return _decoder


def decode(value: bytes | None) -> Job | Skip:
    """Decode one message with the process's decoder."""
    return process_decoder()(value)
