"""Event users and the `sentry:user` tag (reference §2.3)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.users import apply_event_users, event_user
from tests.unit.pipeline.builders import job


@pytest.mark.parametrize(
    ("user", "tag"),
    [
        ({"id": "42", "username": "ann", "email": "a@x.io", "ip_address": "10.0.0.1"}, "id:42"),
        ({"username": "ann", "email": "a@x.io", "ip_address": "10.0.0.1"}, "username:ann"),
        ({"email": "a@x.io", "ip_address": "10.0.0.1"}, "email:a@x.io"),
        ({"ip_address": "10.0.0.1"}, "ip:10.0.0.1"),  # a user with only an IP
        ({"ip_address": "2001:db8::1"}, "ip:2001:db8::1"),
        ({"id": "", "username": "", "email": "a@x.io"}, "email:a@x.io"),  # empty ones skipped
        ({"id": "x" * 300}, "id:" + "x" * 194 + "..."),  # trimmed like every tag
        ({"ip_address": "{{auto}}"}, None),  # not an IP address: dropped
        ({"ip_address": "999.1.1.1"}, None),
        ({"name": "Ann"}, None),  # a name does not identify
        ({"data": {"k": "v"}}, None),
    ],
)
def test_user_tag(user: dict[str, Any], tag: str | None) -> None:
    made = job({"user": user, "tags": [["user", "client-sent"], ["sentry:user", "old"]]})
    apply_event_users([made])
    tags = dict(pair for pair in made.data["tags"])
    assert "user" not in tags  # a user always replaces the `user` tag...
    assert tags.get("sentry:user") == tag  # ...and `sentry:user` is set, or only removed
    assert made.user is not None


@pytest.mark.parametrize("user", [None, {}])
def test_without_a_user_nothing_changes(user: Any) -> None:
    made = job({"user": user, "tags": [["user", "u"], ["sentry:user", "kept"]]})
    apply_event_users([made])
    assert made.user is None
    assert made.data["tags"][:2] == [["user", "u"], ["sentry:user", "kept"]]


def test_event_user_fields() -> None:
    user = event_user(7, {"user": {"id": "1", "email": "e", "name": "N", "ip_address": "bad"}})
    assert user is not None
    assert (user.project_id, user.user_ident, user.email, user.name, user.ip_address) == (
        7,
        "1",
        "e",
        "N",
        None,
    )
