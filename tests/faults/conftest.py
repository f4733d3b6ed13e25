"""Fixtures of the fault suite: one private stack per session (started once, stopped at the
end), the Relay oracle, and the table of results printed after the run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import report
from tests.faults.expect import FieldOracle
from tests.faults.scenario import SEED, events_per_scenario
from tests.faults.stack import FaultStack, start_stack, stop_stack
from tests.faults.verdict import Verdict

_verdicts: list[Verdict] = []
_started = time.monotonic()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: fault injection on a private Kafka, PostgreSQL and Redis "
        "(size: FAULTS_EVENTS messages per scenario)",
    )


@pytest.fixture(scope="session")
def private_stack() -> Iterator[tuple[FaultStack, Path]]:
    stack, folder = start_stack()
    try:
        yield stack, folder
    finally:
        stop_stack(stack, folder)


@pytest.fixture(scope="session")
def stack(private_stack: tuple[FaultStack, Path]) -> FaultStack:
    return private_stack[0]


@pytest.fixture(scope="session")
def stack_folder(private_stack: tuple[FaultStack, Path]) -> Path:
    return private_stack[1]


@pytest.fixture(scope="session")
def oracle() -> FieldOracle:
    return FieldOracle()


@pytest.fixture
def record_verdict() -> Iterator[list[Verdict]]:
    """Verdicts appended here are printed in the session's table."""
    mine: list[Verdict] = []
    yield mine
    _verdicts.extend(mine)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _verdicts:
        return
    document = report.write(_verdicts, events_per_scenario(), SEED, time.monotonic() - _started)
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write_line(document)
