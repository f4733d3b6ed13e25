"""Event users and the `sentry:user` tag (reference §2.3). Pure: no storage at all, as in Sentry
since event users stopped being written to the database."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Any

from consumer.pipeline.job import EventUser, Job


@functools.lru_cache(maxsize=8192)
def is_ip_address(value: str) -> bool:
    """Whether Python's `ipaddress` parses it (what Sentry checks), remembered per value."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def event_user(project_id: int, data: dict[str, Any]) -> EventUser | None:
    """The event's user, or None when `user` is missing or empty. An `ip_address` that does not
    parse as an IP address is dropped."""
    user = data.get("user")
    if not user:
        return None
    ip_address = user.get("ip_address")
    if ip_address and not is_ip_address(str(ip_address)):
        ip_address = None
    return EventUser(
        project_id=project_id,
        user_ident=user.get("id"),
        username=user.get("username"),
        email=user.get("email"),
        ip_address=ip_address,
        name=user.get("name"),
    )


def apply_event_users(jobs: Sequence[Job]) -> None:
    """For each event with a user: drop the `user` tag and set `sentry:user` (which only removes
    it when the user has no identifying field)."""
    for job in jobs:
        user = event_user(job.project_id, job.data)
        if user is not None:
            tags = job.tags
            assert tags is not None  # pulled out
            tags.pop("user")
            tags.set("sentry:user", user.tag_value)
        job.user = user
