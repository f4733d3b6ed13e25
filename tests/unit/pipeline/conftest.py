"""Fixtures for pipeline unit tests: a fake storage with one organization and project, and one
decoder for the session (its caches are what production keeps warm)."""

from __future__ import annotations

import pytest

from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.message import MessageDecoder
from tests.unit.pipeline.builders import ORG_ID, PROJECT_ID


@pytest.fixture
def storage() -> MemoryStorage:
    fake = MemoryStorage()
    fake.add_organization(ORG_ID)
    fake.add_project(PROJECT_ID, ORG_ID)
    return fake


@pytest.fixture(scope="session")
def decoder() -> MessageDecoder:
    return MessageDecoder()
