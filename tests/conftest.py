"""Shared test configuration: where the folder of Sentry's sample events is, if anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Sentry's own sample events live beside the checkout in this workspace; a clone elsewhere has
# none, and the tests that read them skip with a message saying so.
SAMPLES_DIR = Path(
    os.environ.get("SENTRY_SAMPLES_DIR", REPO.parent / "shared" / "fixtures" / "sentry-samples")
)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(
            f"Sentry's sample events are not available at {SAMPLES_DIR} (set SENTRY_SAMPLES_DIR)"
        )
    return SAMPLES_DIR
