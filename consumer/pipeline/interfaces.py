"""The event's interfaces as Sentry sees them (reference §2.5, Sentry's `get_interfaces`).

Sentry builds interface objects from the event's top-level keys that name a registered interface
and are not None, skipping those whose construction fails or that come out empty (an exception
list without values), and orders them by score, highest first. Plugins and interface tags read
them; the order decides which `interface_type` tag wins and the order of the derived tags.

Building them is not pure in Sentry, and its side effects reach the stored event: the request,
SDK, stack frame and exception mechanism interfaces fill their missing fields with None (the
request's `query_string` with []) *in the event itself*. `event_interfaces` reproduces that, so
the stored document and its `bytes.stored.event` match Sentry's (a frame is completed as a copy
that takes its place in its list; see `_FRAME_TEMPLATES`). The other interfaces copy what
they read and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Sentry's registered interfaces and their scores (`SENTRY_INTERFACES`, each class's `score`).
INTERFACE_SCORES: dict[str, int] = {
    "csp": 1300,
    "hpkp": 1300,
    "expectct": 1300,
    "expectstaple": 1300,
    "nel": 0,
    "exception": 2000,
    "logentry": 0,
    "request": 800,
    "sdk": 0,
    "stacktrace": 1950,
    "template": 1100,
    "user": 1,
    "breadcrumbs": 800,
    "contexts": 800,
    "threads": 1900,
    "debug_meta": 0,
    "spans": 1950,
}

# Fields each interface fills with None when missing, in Sentry's order.
REQUEST_FIELDS = (
    "api_target",
    "method",
    "url",
    "fragment",
    "cookies",
    "headers",
    "data",
    "env",
    "inferred_content_type",
)
SDK_FIELDS = ("name", "version", "integrations", "packages")
FRAME_FIELDS = (
    "abs_path",
    "colno",
    "context_line",
    "data",
    "errors",
    "filename",
    "function",
    "raw_function",
    "image_addr",
    "in_app",
    "instruction_addr",
    "addr_mode",
    "lineno",
    "module",
    "package",
    "platform",
    "post_context",
    "pre_context",
    "source_link",
    "symbol",
    "symbol_addr",
    "trust",
    "vars",
    "snapshot",
    "lock",
)
MECHANISM_FIELDS = (
    "type",
    "synthetic",
    "description",
    "help_link",
    "handled",
    "data",
    "meta",
    "source",
    "is_exception_group",
    "exception_id",
    "parent_id",
)


# Per kind of target, the fields to add for each key sequence seen (events from one SDK repeat
# the same few shapes, and a frame has up to 25 fields to check): one lookup instead of a check
# per field. Bounded: cleared when full.
_MISSING_BY_SHAPE: dict[tuple[str, ...], dict[tuple[str, ...], dict[str, None]]] = {
    REQUEST_FIELDS: {},
    SDK_FIELDS: {},
    FRAME_FIELDS: {},
    MECHANISM_FIELDS: {},
}
_MAX_SHAPES = 1024


def _missing(fields: tuple[str, ...], shape: tuple[str, ...]) -> dict[str, None]:
    """The fields absent from a target whose keys are `shape`, in `fields` order, as None."""
    known = _MISSING_BY_SHAPE[fields]
    missing = known.get(shape)
    if missing is None:
        if len(known) >= _MAX_SHAPES:
            known.clear()
        missing = known[shape] = dict.fromkeys([name for name in fields if name not in shape])
    return missing


def _fill(target: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Add each of `fields` that `target` lacks, as None, in `fields` order."""
    missing = _missing(fields, tuple(target))
    if missing:
        target.update(missing)


# Each builder returns whether Sentry would keep the interface: False where its construction
# would raise (and `safe_execute` skip it) or the interface would be empty.


def _request(value: Any) -> bool:
    if type(value) is not dict:
        return False
    if "query_string" not in value:
        value["query_string"] = []
    _fill(value, REQUEST_FIELDS)
    return True


def _sdk(value: Any) -> bool:
    if type(value) is not dict:
        return False
    _fill(value, SDK_FIELDS)
    return True


# Frames are the most numerous targets, and usually lack most of their 25 fields: growing one in
# place resizes it on the way. A frame that lacks fields is replaced in its list by a completed
# copy instead, made from a template of its shape (its keys, then the missing fields, as None):
# the same keys in the same order with the same values, without the resizing. Bounded.
_FRAME_TEMPLATES: dict[tuple[str, ...], dict[str, Any]] = {}


def _frame_template(shape: tuple[str, ...]) -> dict[str, Any]:
    if len(_FRAME_TEMPLATES) >= _MAX_SHAPES:
        _FRAME_TEMPLATES.clear()
    template = _FRAME_TEMPLATES[shape] = dict.fromkeys((*shape, *_missing(FRAME_FIELDS, shape)))
    return template


def _stacktrace(value: Any) -> bool:
    if type(value) is not dict:
        return False
    frames = value.get("frames")
    if not frames:
        return True
    for index, frame in enumerate(frames):
        if frame:
            if type(frame) is not dict:
                return False  # Sentry fails here, after filling the frames before it
            shape = tuple(frame)
            template = _FRAME_TEMPLATES.get(shape)
            if template is None:
                template = _frame_template(shape)
            if len(template) > len(frame):
                frames[index] = template | frame
    return True


def _has_frames(value: Any) -> bool:
    if type(value) is not dict:
        return False
    frames = value.get("frames")
    return type(frames) is list and any(frame is not None for frame in frames)


def _exception(value: Any) -> bool:
    """Kept only with at least one non-None value (the interface's length)."""
    if type(value) is not dict:
        return False
    values = value.get("values")
    if values is None:
        return False
    if type(values) is not list:
        return False
    kept = False
    for single in values:
        if single is None:
            continue
        kept = True
        if not single:
            continue
        if type(single) is not dict:
            return False
        for key in ("stacktrace", "raw_stacktrace"):
            if _has_frames(single.get(key)) and not _stacktrace(single[key]):
                return False
        mechanism = single.get("mechanism")
        if mechanism:
            if type(mechanism) is not dict:
                return False
            _fill(mechanism, MECHANISM_FIELDS)
    return kept


def _contexts(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for context in value.values():
        if context is not None and type(context) is not dict:
            return False
    return True


_BUILDERS = {
    "request": _request,
    "sdk": _sdk,
    "stacktrace": _stacktrace,
    "exception": _exception,
    "contexts": _contexts,
}
# Every interface key with its builder (None: kept when it is an object), so that each key of
# the event costs one lookup.
_INTERFACES: dict[str, Callable[[Any], bool] | None] = {
    key: _BUILDERS.get(key) for key in INTERFACE_SCORES
}


def event_interfaces(data: dict[str, Any]) -> tuple[str, ...]:
    """The keys of the event's interfaces, highest score first (ties in the event's key order),
    after applying Sentry's side effects on the event. Call once per event."""
    found: list[str] = []
    # The event's keys are filtered in C: most of them are no interface.
    for key in filter(_INTERFACES.__contains__, data):
        value = data[key]
        if value is None:
            continue
        builder = _INTERFACES[key]
        if builder is None:
            if type(value) is not dict:
                continue
        elif not builder(value):
            continue
        found.append(key)
    # Stable, like Sentry's sorted(..., reverse=True): ties keep the event's key order.
    found.sort(key=INTERFACE_SCORES.__getitem__, reverse=True)
    return tuple(found)
