"""The culprit: Sentry's legacy one-line "where it happened" (reference §2.6, Sentry's
`culprit.py` and `get_culprit`). Pure.

`get_culprit` takes the first truthy of the event's own `culprit`, its `transaction`, and the
generated culprit. The generated one comes from the last stack trace with frames (of the
exceptions, else the top-level `stacktrace`): the last in-app frame that yields a culprit, else
the last frame's; failing that, the request URL; truncated to 200 characters. A synthetic last
exception gets no culprit. (Sentry's NEL branch needs `type == "nel"`, which a generic event
never has, so it is not reproduced.)
"""

from __future__ import annotations

from typing import Any

from consumer.pipeline.tags import truncatechars

MAX_CULPRIT_LENGTH = 200

_FUNCTION_ONLY_PLATFORMS = frozenset({"objc", "cocoa", "native"})
_CALL_STYLE_PLATFORMS = frozenset({"javascript", "node"})


def get_culprit(data: dict[str, Any]) -> str:
    value = data.get("culprit") or data.get("transaction") or generate_culprit(data) or ""
    return value if isinstance(value, str) else str(value)


def generate_culprit(data: dict[str, Any]) -> str:
    platform = data.get("platform")
    stacktraces: list[Any] | None
    exceptions = _exception_values(data)
    if exceptions:
        last = exceptions[-1]
        mechanism = last.get("mechanism") if isinstance(last, dict) else None
        if isinstance(mechanism, dict) and mechanism.get("synthetic"):
            return ""
        stacktraces = [
            e["stacktrace"]
            for e in exceptions
            if isinstance(e, dict)
            and isinstance(e.get("stacktrace"), dict)
            and e["stacktrace"].get("frames")
        ]
    else:
        stacktrace = data.get("stacktrace")
        stacktraces = [stacktrace] if stacktrace and stacktrace.get("frames") else None

    culprit = None
    if stacktraces:
        culprit = stacktrace_culprit(stacktraces[-1], platform)
    if not culprit and data.get("request"):
        culprit = data["request"].get("url")
    return truncatechars(culprit or "", MAX_CULPRIT_LENGTH)


def _exception_values(data: dict[str, Any]) -> list[Any] | None:
    exception = data.get("exception")
    if not isinstance(exception, dict):
        return None
    values = exception.get("values")
    if not isinstance(values, list):
        return None
    return [value for value in values if value is not None]


def stacktrace_culprit(stacktrace: dict[str, Any], platform: Any) -> str | None:
    default = None
    for frame in reversed(stacktrace["frames"]):
        if not frame:
            continue
        if frame.get("in_app"):
            culprit = frame_culprit(frame, platform)
            if culprit:
                return culprit
        elif default is None:
            default = frame_culprit(frame, platform)
    return default


def frame_culprit(frame: dict[str, Any], platform: Any) -> str:
    """A frame's own `platform` wins over the event's (an exception may come from another)."""
    platform = frame.get("platform") or platform
    function = frame.get("function")
    if platform in _FUNCTION_ONLY_PLATFORMS:
        return function or "?"
    fileloc = frame.get("module") or frame.get("filename")
    if not fileloc:
        return ""
    if platform in _CALL_STYLE_PLATFORMS:
        return f"{function or '?'}({fileloc})"
    return f"{fileloc} in {function or '?'}"
