"""Pure parts of the storage: Sentry's key formats, model-cache versioning, release version rules
and parsed columns, the string-to-id cache's stamps, staleness and TTL jitter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import InvalidCacheEntry
from consumer.storage.model_cache import ModelSpec, cache_version, lookup_key
from consumer.storage.models import Environment, Organization, Project
from consumer.storage.release_rows import (
    UNPARSED,
    VersionColumns,
    build_number,
    fits_bigint,
    is_valid_version,
    project_version,
    version_columns,
)
from consumer.storage.store import ENVIRONMENT, ORGANIZATION, PROJECT
from consumer.storage.string_id_cache import (
    STALE_AFTER_SECONDS,
    external_key,
    jittered_ttl,
    legacy_key,
    namespaced_key,
    read_legacy,
    read_stamped,
    stamped_value,
)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- model cache keys


def test_model_cache_key_is_sentrys_make_key() -> None:
    assert lookup_key("Project", "id", 42) == "modelcache:Project:" + md5("id=42")
    assert lookup_key("Organization", "slug", "acme") == "modelcache:Organization:" + md5(
        "slug=acme"
    )


def test_model_cache_version_is_md5_of_sorted_field_names() -> None:
    fields = [
        "id",
        "organization_id",
        "slug",
        "name",
        "status",
        "flags",
        "platform",
        "date_added",
        "date_deleted",
    ]
    assert PROJECT.version == md5("&".join(sorted(fields)))[:3]
    assert cache_version(["b", "a"]) == md5("a&b")[:3]
    assert len({PROJECT.version, ORGANIZATION.version, ENVIRONMENT.version}) == 3


def test_adding_a_field_changes_the_version() -> None:
    @dataclass(frozen=True)
    class ProjectWithFirstEvent(Project):
        first_event: datetime | None = None

    spec = ModelSpec("Project", "sentry_project", ProjectWithFirstEvent)
    assert spec.version != PROJECT.version
    assert spec.version == cache_version([*PROJECT.fields, "first_event"])


def test_lookups_name_cache_fields_only() -> None:
    assert ORGANIZATION.field("pk") == "id"
    assert ORGANIZATION.field("slug__exact") == "slug"
    with pytest.raises(ValueError, match="not a cache field"):
        PROJECT.field("slug")
    with pytest.raises(ValueError, match="not a cache field"):
        ORGANIZATION.field("name")


def _org(**changes: object) -> Organization:
    values: dict[str, object] = {
        "id": 7,
        "slug": "acme",
        "name": "Acme",
        "status": 0,
        "flags": 1,
        "date_added": datetime(2024, 7, 1, 12, 30, tzinfo=UTC),
        "date_deleted": None,
    }
    values.update(changes)
    return Organization(**values)  # type: ignore[arg-type]


def test_rows_round_trip_through_json() -> None:
    org = _org(date_deleted=datetime(2024, 7, 2, tzinfo=UTC))
    raw = ORGANIZATION.encode(org)
    assert orjson.loads(raw)["date_added"] == "2024-07-01T12:30:00+00:00"
    assert ORGANIZATION.decode(raw) == org
    env = Environment(3, 7, "", None)
    assert ENVIRONMENT.decode(ENVIRONMENT.encode(env)) == env


@pytest.mark.parametrize(
    "raw",
    [
        b"\x80\x04\x95pickle",  # a pickle (Sentry's format) is never read
        b"42",  # a pointer where a row belongs
        b"not json",
        orjson.dumps({"id": 7, "slug": "acme"}),  # missing fields
        orjson.dumps({**orjson.loads(ORGANIZATION.encode(_org())), "extra": 1}),
        orjson.dumps({**orjson.loads(ORGANIZATION.encode(_org())), "id": "7"}),
        orjson.dumps({**orjson.loads(ORGANIZATION.encode(_org())), "status": True}),
        orjson.dumps({**orjson.loads(ORGANIZATION.encode(_org())), "name": None}),
        orjson.dumps({**orjson.loads(ORGANIZATION.encode(_org())), "date_added": "yesterday"}),
        orjson.dumps({**orjson.loads(ORGANIZATION.encode(_org())), "date_added": "2024-07-01"}),
    ],
)
def test_anything_but_a_row_is_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidCacheEntry):
        ORGANIZATION.decode(raw)


# ----------------------------------------------------------------------------- releases


@pytest.mark.parametrize(
    ("version", "valid"),
    [
        ("1.0", True),
        ("backend@1.4.0", True),
        (" 1.0 ", True),
        ("a:b", True),
        (None, False),
        ("", False),
        ("   ", False),
        (".", False),
        ("..", False),
        (" .. ", False),
        ("latest", False),
        ("LaTeSt", False),
        (" latest ", False),
        ("latest-1", True),
        ("a/b", False),
        ("a\\b", False),
        ("a\tb", False),
        ("a\nb", False),
        ("a\rb", False),
        ("a\fb", False),
    ],
)
def test_release_version_validity_is_sentrys(version: str | None, valid: bool) -> None:
    assert is_valid_version(version) is valid


def test_project_version_is_slug_dash_version_cut_to_250() -> None:
    assert project_version("web", "1.0") == "web-1.0"
    assert project_version(None, "1.0") == "1.0"
    assert len(project_version("s" * 50, "v" * 240)) == 250


def test_parsed_columns_of_a_semver_release() -> None:
    assert version_columns("org.example.FooApp@1.0rc1+20200101100") == VersionColumns(
        package="org.example.FooApp",
        major=1,
        minor=0,
        patch=0,
        revision=0,
        prerelease="rc1",
        build_code="20200101100",
        build_number=20200101100,
    )
    assert version_columns("foo@1.2.3") == VersionColumns("foo", 1, 2, 3, 0, "", None, None)
    assert version_columns("a@1.2.3.4-beta+abc") == VersionColumns(
        "a", 1, 2, 3, 4, "beta", "abc", None
    )


def test_unparsed_versions_leave_every_column_null() -> None:
    assert version_columns("1.0") == UNPARSED  # no package: Relay parses no version
    assert version_columns("abc") == UNPARSED
    assert version_columns("latest") == UNPARSED  # Relay refuses it (RelayError)
    assert version_columns("x" * 300) == UNPARSED  # too long for Relay
    # A component beyond a signed 64-bit integer: nothing is filled, not even the package.
    assert version_columns("foo@9223372036854775808.0.0") == UNPARSED
    assert version_columns("foo@9223372036854775807.0.0").major == 2**63 - 1


def test_build_number_is_the_build_code_when_it_is_a_bigint() -> None:
    assert build_number("42") == 42
    assert build_number(None) is None
    assert build_number("abc") is None
    assert build_number("-1") is None
    assert build_number(str(2**63)) is None
    assert build_number("4_2") == 42  # Python's int(), as in Sentry
    assert version_columns("foo@1.2.3+99999999999999999999").build_number is None


def test_bigint_fit() -> None:
    assert fits_bigint(0)
    assert fits_bigint(2**63 - 1)
    assert not fits_bigint(2**63)
    assert not fits_bigint(-1)
    assert not fits_bigint(True)
    assert not fits_bigint("1")


# ----------------------------------------------------------------------------- string-to-id cache


def test_string_id_keys_are_sentrys_indexer_keys() -> None:
    key = external_key("releases", 42, "web@1:2")
    assert key == "releases:42:web@1:2"
    digest = md5("42:web@1:2")  # the string keeps its colons
    assert legacy_key(key) == f"indexer:pg:org:str:releases:{digest}"
    assert namespaced_key("br", key) == f"indexer:pg:br:org:str:releases:{digest}"
    assert legacy_key(key, "x") == f"indexer:x:org:str:releases:{digest}"


def test_namespaced_values_carry_the_write_time() -> None:
    assert stamped_value(17, 1_700_000_000.9) == b"17:1700000000"
    assert read_stamped(b"17:1700000000", 1_700_000_000) == 17
    assert read_legacy(b"17") == 17


def test_stamps_older_than_three_hours_are_stale() -> None:
    now = 1_700_000_000.0
    assert STALE_AFTER_SECONDS == 10_800
    assert read_stamped(stamped_value(5, now - 10_800), now) == 5
    assert read_stamped(stamped_value(5, now - 10_801), now) is None
    assert read_stamped(stamped_value(5, now + 60), now) == 5


@pytest.mark.parametrize("raw", [b"", b"abc", b"1:2:3", b"1:x", b"x:1", b"1"])
def test_unreadable_stamped_values_are_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidCacheEntry):
        read_stamped(raw, 0)


def test_unreadable_legacy_values_are_invalid() -> None:
    with pytest.raises(InvalidCacheEntry):
        read_legacy(b"12:34")


@given(
    ttl=st.integers(min_value=1, max_value=10**6),
    uniform=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_ttl_jitter_stays_within_a_quarter(ttl: int, uniform: float) -> None:
    result = jittered_ttl(ttl, uniform)
    assert ttl <= result <= ttl * 1.25


def test_ttl_jitter_spans_the_range() -> None:
    assert jittered_ttl(7200, 0.0) == 7200
    assert jittered_ttl(7200, 0.5) == 8100
    assert jittered_ttl(7200, 0.99999) == 8999
