"""Releases and dists (reference §2.2, CONTRACT §9.2 and §9.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer import metrics
from consumer.pipeline.job import Job
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.releases import (
    apply_releases,
    is_valid_version,
    release_requests,
    resolve_releases,
)
from tests.unit.pipeline.builders import job


@pytest.mark.parametrize(
    ("version", "valid"),
    [
        ("1.0.0", True),
        ("backend@1.4.0+build.7", True),
        ("  spaced  ", True),
        ("a" * 250, True),
        (None, False),
        ("", False),
        ("   ", False),
        (".", False),
        ("..", False),
        (" .. ", False),
        ("latest", False),
        ("LaTeSt", False),
        (" latest ", False),
        ("a/b", False),
        ("a\\b", False),
        ("line\nbreak", False),
        ("carriage\rreturn", False),
        ("tab\there", False),
        ("form\ffeed", False),
        ("latest2", True),
        ("...", True),
    ],
)
def test_is_valid_version(version: Any, valid: bool) -> None:
    assert is_valid_version(version) is valid


def _jobs(storage: MemoryStorage, *specs: dict[str, Any]) -> list[Job]:
    made = []
    for spec in specs:
        spec = dict(spec)
        project_id = spec.pop("project_id", 1)
        made.append(job({"platform": "python", "tags": [], **spec}, project_id=project_id))
    return made


def _tags(made: Job) -> dict[str, Any]:
    return {pair[0]: pair[1] for pair in made.data["tags"]}


def test_release_and_dist_tags(storage: MemoryStorage) -> None:
    (made,) = _jobs(
        storage, {"release": "app@1.0", "dist": "42", "tags": [["release", "x"], ["dist", "y"]]}
    )
    apply_releases([made], resolve_releases([made], storage.projects_by_id, storage))
    release = storage.release_rows[(1, "app@1.0")]
    assert made.release_id == release.id
    assert made.dist_id == storage.dist_rows[(release.id, "42")][0]
    tags = _tags(made)
    assert tags["sentry:release"] == "app@1.0" and tags["sentry:dist"] == "42"
    assert "release" not in tags and "dist" not in tags
    assert [pair[0] for pair in made.data["tags"]][-2:] == ["sentry:release", "sentry:dist"]


@pytest.mark.parametrize("version", ["latest", "..", "a/b", "tab\there"])
def test_an_invalid_release_is_neither_created_nor_tagged(
    storage: MemoryStorage, version: str
) -> None:
    (made,) = _jobs(storage, {"release": version, "dist": "1"})
    apply_releases([made], resolve_releases([made], storage.projects_by_id, storage))
    assert storage.calls == []  # nothing to ask for
    assert made.release == version  # the raw string stays on the job
    assert made.release_id is None and made.dist_id is None
    assert "sentry:release" not in _tags(made) and "sentry:dist" not in _tags(made)


def test_no_release_no_call(storage: MemoryStorage) -> None:
    (made,) = _jobs(storage, {"dist": "1"})
    apply_releases([made], resolve_releases([made], storage.projects_by_id, storage))
    assert storage.calls == [] and made.dist_id is None


def test_date_added_is_the_first_processed_event_time_per_project_and_version(
    storage: MemoryStorage,
) -> None:
    """Sentry saves one message at a time: the first event processed creates the release with
    its own time (`event_manager.py:709-792`, `Release.get_or_create(date_added=...)`), and the
    later ones, earlier or later in time, find it. Not the batch's latest event time."""
    storage.add_project(2, 1)
    base = datetime(2024, 5, 1, tzinfo=UTC)
    made = _jobs(
        storage,
        {"release": "r1", "timestamp": (base + timedelta(hours=1)).timestamp()},
        {"release": "r1", "timestamp": (base + timedelta(hours=2)).timestamp()},
        {"release": "r1", "timestamp": base.timestamp()},
        {"release": "r1", "timestamp": base.timestamp(), "project_id": 2},
        {"release": "r2", "timestamp": base.timestamp()},
    )
    requests = release_requests(made, storage.projects_by_id)
    assert [(r.project_id, r.version, r.date_added) for r in requests] == [
        (1, "r1", base + timedelta(hours=1)),
        (2, "r1", base),
        (1, "r2", base),
    ]
    assert all(r.organization_id == 1 for r in requests)
    assert requests[0].project_slug == "proj-1"


def test_two_projects_of_one_organization_share_a_release_and_both_are_linked(
    storage: MemoryStorage,
) -> None:
    storage.add_project(2, 1)
    made = _jobs(storage, {"release": "shared@2"}, {"release": "shared@2", "project_id": 2})
    apply_releases(made, resolve_releases(made, storage.projects_by_id, storage))
    release = storage.release_rows[(1, "shared@2")]
    assert made[0].release_id == made[1].release_id == release.id
    assert storage.release_links == {(release.id, 1), (release.id, 2)}
    assert all(storage.projects_by_id[p].flags == 1 for p in (1, 2))  # has_releases
    assert storage.calls == ["releases"]  # one call for the batch


def test_one_distribution_request_per_release_and_name_dated_by_its_first_job(
    storage: MemoryStorage,
) -> None:
    first = datetime(2024, 5, 1, 12, tzinfo=UTC)
    made = _jobs(
        storage,
        {"release": "r", "dist": "a", "timestamp": first.timestamp()},
        {"release": "r", "dist": "a", "timestamp": (first - timedelta(days=1)).timestamp()},
        {"release": "r", "dist": "b", "timestamp": first.timestamp()},
    )
    apply_releases(made, resolve_releases(made, storage.projects_by_id, storage))
    assert storage.calls == ["releases", "distributions"]
    release_id = storage.release_rows[(1, "r")].id
    assert storage.dist_rows[(release_id, "a")][1].date_added == first
    assert made[0].dist_id == made[1].dist_id != made[2].dist_id


def test_a_dist_too_long_to_store_is_dropped_with_a_counted_warning(storage: MemoryStorage) -> None:
    before = metrics.total(metrics.EVENT_WARNINGS, warning="dist_too_long")
    made = _jobs(storage, {"release": "r", "dist": "d" * 65}, {"release": "r", "dist": "d" * 64})
    apply_releases(made, resolve_releases(made, storage.projects_by_id, storage))
    too_long, fits = made
    assert too_long.data["dist"] is None and too_long.dist is None and too_long.dist_id is None
    assert "sentry:dist" not in _tags(too_long)
    assert _tags(too_long)["sentry:release"] == "r"  # the release itself is kept
    assert fits.dist_id is not None and _tags(fits)["sentry:dist"] == "d" * 64
    assert [request.name for _id, request in storage.dist_rows.values()] == ["d" * 64]
    assert metrics.total(metrics.EVENT_WARNINGS, warning="dist_too_long") == before + 1
