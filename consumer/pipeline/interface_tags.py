"""Interface tags (reference §2.5, Sentry's `_derive_interface_tags_many`). Pure.

Only two interfaces yield tags: contexts (see `contexts.py`) and exception (the last
exception's mechanism: `mechanism` = its type, `handled` = yes/no when known). Unlike plugin
tags these are written with `set_tag`, so they override a tag of the same key already there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from consumer.pipeline.contexts import context_tags
from consumer.pipeline.interfaces import event_interfaces

if TYPE_CHECKING:
    from consumer.pipeline.job import Job


def exception_tags(exception: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    values = exception.get("values") or []
    if not values or not values[-1]:
        return
    mechanism = values[-1].get("mechanism")
    if not mechanism:
        return
    # A mechanism without a type yields a None value, which only removes the tag.
    yield ("mechanism", mechanism.get("type"))
    handled = mechanism.get("handled")
    if handled is not None:
        yield ("handled", "yes" if handled else "no")


def interface_tags(data: dict[str, Any], interfaces: Sequence[str]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key in interfaces:
        if key == "contexts":
            found += context_tags(data["contexts"])
        elif key == "exception":
            found += exception_tags(data["exception"])
    return found


def apply_interface_tags(jobs: Sequence[Job]) -> None:
    for job in jobs:
        data = job.data
        interfaces = job.interfaces
        if interfaces is None:
            interfaces = job.interfaces = event_interfaces(data)
        tags = job.tags
        assert tags is not None  # pulled out
        tags.set_many(interface_tags(data, interfaces))
