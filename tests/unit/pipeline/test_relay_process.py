"""The Relay process (`worker.relay_process`): the same Jobs as Relay's calls made in the worker,
for every sample and sentry-sdk event, Relay's refusals and the fallback to Relay's own
user-agent parsing included; a process that dies is replaced once per batch, then the worker
stops; signals are the worker's; a closed process takes no more batches. Real child processes,
real Relay: nothing here needs the network."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.errors import BadMessage, FatalError
from consumer.loadgen.occurrences import wrap_event
from consumer.loadgen.sdk import capture_events
from consumer.pipeline import normalize
from consumer.pipeline.job import Job
from consumer.pipeline.message import MessageDecoder, Prepared
from consumer.pipeline.relay_process import RelayProcess, usable_cpus, wanted
from tests.unit.pipeline.builders import PROJECT_ID, event, occurrence
from tests.unit.pipeline.samples import load_samples


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    process = RelayProcess()
    yield process
    process.close()


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _finish(decoder: MessageDecoder, messages: Sequence[bytes]) -> list[Job | BadMessage]:
    prepared = [decoder.prepare(value) for value in messages]
    assert all(isinstance(item, Prepared) for item in prepared)
    return decoder.finish([item for item in prepared if isinstance(item, Prepared)])


def _comparable(result: Job | BadMessage) -> Any:
    if isinstance(result, BadMessage):
        return (result.reason, result.detail)
    data = dict(result.data)
    data.pop("received", None)  # Relay's clock, when `received` is missing
    return (result.event_id, result.occurrence_json, orjson.dumps(data))


def _assert_same_jobs(relay: RelayProcess, messages: Sequence[bytes]) -> int:
    here = _finish(MessageDecoder(), messages)
    there = _finish(MessageDecoder(relay=relay), messages)
    assert [_comparable(r) for r in there] == [_comparable(r) for r in here]
    return len(there)


def test_sdk_events_make_the_same_jobs(relay: RelayProcess) -> None:
    rng = random.Random(5)
    messages = [wrap_event(e, PROJECT_ID, rng)[1] for e in capture_events(200, seed=5)]
    assert _assert_same_jobs(relay, messages) == 200


def test_sample_events_make_the_same_jobs(relay: RelayProcess, samples_dir: Path) -> None:
    rng = random.Random(6)
    messages = [
        wrap_event(sample.event, PROJECT_ID, rng)[1]
        for sample in load_samples(samples_dir)
        if sample.accepted and sample.event is not None
    ]
    assert _assert_same_jobs(relay, messages) == 44


def test_refusals_are_the_same(relay: RelayProcess) -> None:
    messages = [
        orjson.dumps(occurrence(event())),
        orjson.dumps(occurrence(event(extra={"a": _nested(150)}))),  # Relay refuses it
        orjson.dumps(occurrence(event(platform="javascript"))),
    ]
    results = _finish(MessageDecoder(relay=relay), messages)
    assert [isinstance(r, Job) for r in results] == [True, False, True]
    assert isinstance(results[1], BadMessage) and results[1].reason == "normalization_failed"
    assert _assert_same_jobs(relay, messages) == 3


def test_the_fallback_to_relays_own_user_agent_parsing_is_the_same(
    relay: RelayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event the cached user-agent contexts cannot be merged into is normalized again with
    Relay's own parsing, in the worker (Relay always adds a trace context today, so this is
    forced here)."""
    monkeypatch.setattr(normalize, "mergeable", lambda _event: False)
    user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
    message = orjson.dumps(occurrence(event(request={"headers": [["User-Agent", user_agent]]})))
    (result,) = _finish(MessageDecoder(relay=relay), [message])
    assert isinstance(result, Job)
    assert result.data["contexts"]["browser"]["name"] == "Chrome"
    assert _assert_same_jobs(relay, [message]) == 1


def _request() -> list[tuple[int, bytes]]:
    return [(PROJECT_ID, orjson.dumps(event())) for _ in range(3)]


def _wait_for_exit(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def test_a_killed_process_is_replaced_and_the_batch_done() -> None:
    relay = RelayProcess()
    try:
        assert len(relay.normalize(_request())) == 3
        pid = relay.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        reply = relay.normalize(_request())
        assert [orjson.loads(r)["platform"] for r in reply if isinstance(r, bytes)] == [
            "python"
        ] * 3
        assert relay.restarts == 1 and relay.pid != pid
    finally:
        relay.close()


def _exit_at_once(conn: Connection) -> None:
    """A Relay process that dies on every batch."""
    conn.recv_bytes()
    os._exit(3)


def test_a_process_that_dies_twice_on_a_batch_stops_the_worker() -> None:
    relay = RelayProcess(target=_exit_at_once)
    try:
        with pytest.raises(FatalError, match="died twice"):
            relay.normalize(_request())
        assert relay.restarts == 1
    finally:
        relay.close()


def test_sigterm_and_sigint_are_left_to_the_worker() -> None:
    """The worker drains on SIGTERM and SIGINT (a terminal's Ctrl-C reaches the whole process
    group) and needs its Relay process for the batches it still finishes."""
    relay = RelayProcess()
    try:
        assert len(relay.normalize(_request())) == 3  # started, handlers installed
        pid = relay.pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        assert len(relay.normalize(_request())) == 3
        assert relay.restarts == 0 and relay.pid == pid
    finally:
        relay.close()


def test_a_closed_process_exits_and_takes_no_more_batches() -> None:
    relay = RelayProcess()
    pid = relay.pid
    assert pid is not None
    relay.close()
    _wait_for_exit(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(FatalError, match="closed"):
        relay.normalize(_request())
    relay.close()  # twice is harmless


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "expected"),
    [
        (None, 4, 4),  # no cgroup file
        ("max 100000\n", 4, 4),  # no quota
        ("150000 100000\n", 4, 2),  # --cpus=1.5: two CPUs' worth of scheduling
        ("50000 100000\n", 4, 1),
        ("800000 100000\n", 2, 2),  # a quota above the affinity
        ("garbage\n", 3, 3),
    ],
)
def test_usable_cpus(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cpu_max: str | None,
    affinity: int,
    expected: int,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(affinity)))
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert usable_cpus(path) == expected


@pytest.mark.parametrize(
    ("mode", "processes", "cpus", "expected"),
    [
        ("auto", 1, 2, True),
        ("auto", 2, 2, False),
        ("auto", 1, 1, False),
        ("on", 4, 2, True),
        ("off", 1, 8, False),
    ],
)
def test_when_a_worker_uses_a_relay_process(
    mode: str, processes: int, cpus: int, expected: bool
) -> None:
    assert wanted(mode, processes, cpus) is expected
