"""The lock files and pyproject.toml agree: every dependency that pyproject.toml names is locked
at a version its range allows, with hashes, and the image's runtime lock holds the same versions
as the development lock. A range moved without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements-dev.txt"
RUNTIME_LOCK = ROOT / "requirements.txt"
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def read_lock(path: Path) -> dict[str, str]:
    """Name -> version of a hashed lock; fails on an entry without a hash."""
    pins: dict[str, str] = {}
    name = None
    hashed: set[str] = set()
    for line in path.read_text().splitlines():
        pinned = PINNED.match(line)
        if pinned:
            name = canonicalize_name(pinned.group(1))
            pins[name] = pinned.group(2)
        elif name is not None and line.strip().startswith("--hash=sha256:"):
            hashed.add(name)
    assert pins, f"{path} locks nothing"
    assert set(pins) == hashed, f"{path}: entries without a hash: {sorted(set(pins) - hashed)}"
    return pins


def project() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"runtime": data["dependencies"], "dev": data["optional-dependencies"]["dev"]}


def out_of_range(locked: dict[str, str], group: str) -> list[str]:
    """pyproject.toml's requirements of `group` that the lock misses or pins outside the range."""
    wrong = []
    for text in project()[group]:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = locked.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{text}: locked {version}")
    return wrong


@pytest.mark.parametrize("group", ["runtime", "dev"])
def test_every_dependency_is_locked_within_its_range(group: str) -> None:
    wrong = out_of_range(read_lock(DEV_LOCK), group)
    assert not wrong, f"{DEV_LOCK} no longer satisfies pyproject.toml (run make lock): {wrong}"


def test_the_runtime_lock_holds_the_development_versions() -> None:
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    direct = {canonicalize_name(Requirement(text).name) for text in project()["runtime"]}
    assert direct <= set(runtime), f"not in {RUNTIME_LOCK}: {sorted(direct - set(runtime))}"
    differ = {name: (version, dev.get(name)) for name, version in runtime.items()}
    assert {name: pair for name, pair in differ.items() if pair[0] != pair[1]} == {}


def test_a_lock_out_of_range_is_caught() -> None:
    """The check itself can fail: a lock that pins sentry-sdk below pyproject's range, or
    misses a dependency."""
    locked = read_lock(DEV_LOCK)
    assert out_of_range({**locked, "sentry-sdk": "2.0.0"}, "runtime") != []
    del locked["orjson"]
    assert any(line.startswith("orjson") for line in out_of_range(locked, "runtime"))
