"""Tags derived from contexts (reference §2.5, Sentry's `interfaces/contexts.py`). Pure.

Each context is read as the type named by its `type` field, else by its key (the alias); unknown
types are the default type, which yields no tags. Each type maps tag names, relative to the
alias ("" is the alias itself), to format strings over the context's fields. A mapping whose
format names a missing or None field is skipped; booleans render as "yes"/"no", everything else
as `str()` (what `string.Formatter` does with an empty format spec); the result is stripped and
kept only when non-empty. Tags come out in context order, then mapping order.
"""

from __future__ import annotations

import string
from typing import Any

# type -> {tag suffix: format}; the order of each mapping is the order of the tags.
CONTEXT_TAG_FORMATS: dict[str, dict[str, str]] = {
    "default": {},
    "app": {"device": "{device_app_hash}"},
    "device": {"": "{model}", "family": "{family}"},
    "runtime": {"": "{name} {version}", "name": "{name}"},
    "browser": {"": "{name} {version}", "name": "{name}"},
    "os": {"": "{name} {version}", "name": "{name}", "rooted": "{rooted}"},
    "gpu": {"name": "{name}", "vendor": "{vendor_name}"},
    "monitor": {"id": "{id}", "slug": "{slug}"},
    "trace": {},
    "otel": {},
}

# A format compiled once: its first field, then each further field with the text before it
# (only formats of the shape "{a}" or "{a}<text>{b}"... exist, with no text before the first
# field or after the last).
Compiled = tuple[str, tuple[tuple[str, str], ...]]


def _compile(fmt: str) -> Compiled:
    fields: list[str] = []
    texts: list[str] = []
    for literal, field, _spec, _conv in string.Formatter().parse(fmt):
        if field is None:
            raise ValueError(f"unsupported context tag format {fmt!r}")
        if fields:
            texts.append(literal)
        elif literal:
            raise ValueError(f"unsupported context tag format {fmt!r}")
        fields.append(field)
    return fields[0], tuple(zip(texts, fields[1:], strict=True))


_COMPILED: dict[str, tuple[tuple[str, Compiled], ...]] = {
    kind: tuple((suffix, _compile(fmt)) for suffix, fmt in formats.items())
    for kind, formats in CONTEXT_TAG_FORMATS.items()
}


def _render(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return value if type(value) is str else str(value)


def _format(compiled: Compiled, context: dict[str, Any]) -> str | None:
    """None when a named field is missing or None (Sentry drops None fields, then KeyError)."""
    first_field, rest = compiled
    first = context.get(first_field)
    if first is None:
        return None
    # Fast path: strings, most values, need no call to render; a single field, most formats,
    # needs no list to join.
    if type(first) is not str:
        first = _render(first)
    if not rest:
        return first.strip()
    parts = [first]
    for text, field in rest:
        value = context.get(field)
        if value is None:
            return None
        parts.append(text)
        parts.append(_render(value))
    return "".join(parts).strip()


def context_tags(contexts: dict[str, Any]) -> list[tuple[str, str]]:
    """(tag, value) pairs for every non-None context, in the contexts' order."""
    found = []
    for alias, context in contexts.items():
        if context is None:
            continue
        kind = context.get("type", alias)
        mappings = _COMPILED.get(kind) if isinstance(kind, str) else None
        if not mappings:
            continue
        for suffix, compiled in mappings:
            value = _format(compiled, context)
            if value:
                found.append((f"{alias}.{suffix}" if suffix else alias, value))
    return found
