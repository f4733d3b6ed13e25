"""The arroyo chain on arroyo's in-memory broker: offsets move only past saved, dead-lettered or
skipped messages; a failing save commits nothing; a drain commits exactly what was saved."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

import pytest
from arroyo.backends.kafka import KafkaPayload
from arroyo.backends.local.backend import LocalBroker
from arroyo.backends.local.storages.memory import MemoryMessageStorage
from arroyo.commit import IMMEDIATE
from arroyo.processing import StreamProcessor
from arroyo.types import Partition, Topic
from arroyo.utils.clock import MockedClock

from consumer.errors import BadMessage, TransientError
from consumer.pipeline.job import Job
from consumer.pipeline.message import Prepared, Skip
from consumer.settings import WorkerSettings
from consumer.strategy.classify import Classify
from consumer.strategy.dlq import DeadLetter
from consumer.strategy.factory import StrategyFactory
from consumer.strategy.guard import DeadLetterGuard
from consumer.strategy.save_and_dead_letter import SaveAndDeadLetter
from consumer.strategy.save_step import HANDOFF_WAIT

TOPIC = Topic("occurrences")
GROUP = "workers"


@pytest.fixture(params=[False, True], ids=["normalized on the main thread", "normalize thread"])
def normalize_thread(request: pytest.FixtureRequest) -> bool:
    """Every test runs both ways: Relay's calls on the main thread, or on the normalize thread
    (with a Relay process)."""
    flag: bool = request.param
    return flag


class StandInDecoder:
    """b"good:N" is a job, b"relay:N" an event Relay rejects, b"crash:N" a bug in `finish`,
    b"skip" a skip, anything else bad; records the messages of every `finish` call."""

    def __init__(self) -> None:
        self.finished: list[list[str]] = []
        self.prepared = 0  # messages `prepare` saw

    def prepare(self, value: bytes | None) -> Prepared | Skip:
        assert value is not None
        self.prepared += 1
        if value.startswith((b"good:", b"relay:", b"crash:")):
            kind, number = value.decode().split(":")
            event_id = f"{int(number):032x}"
            return Prepared(1, event_id, event_id, kind.encode(), b"{}", len(value), None, 0.0)
        if value == b"skip":
            return Skip("status_change")
        raise BadMessage("invalid_json", "not JSON")

    def finish(self, batch: Sequence[Prepared]) -> list[Job | BadMessage]:
        self.finished.append([prepared.event_id for prepared in batch])
        if any(prepared.event_json == b"crash" for prepared in batch):
            raise RuntimeError("a bug in normalization")
        results: list[Job | BadMessage] = []
        for prepared in batch:
            if prepared.event_json == b"relay":
                results.append(BadMessage("normalization_failed", "Relay rejects it"))
            else:
                results.append(Job(1, prepared.event_id, prepared.occurrence_id, {}, b"{}"))
        return results


class RecordingSaver:
    """Records saved event ids; `gate` blocks a save until set; `fail` makes saves raise."""

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail: Exception | None = None

    def save(self, jobs: Sequence[Job]) -> None:
        self.started.set()
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.saved.extend(job.event_id for job in jobs)


class RecordingDeadLetters:
    topic = "occurrences-dlq"

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def produce_and_wait(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def close(self) -> None:
        pass


class Harness:
    def __init__(
        self,
        partitions: int = 1,
        batch_size: int = 100,
        batch_time_ms: int = 60_000,
        normalize_thread: bool = False,
    ) -> None:
        self.broker: LocalBroker[KafkaPayload] = LocalBroker(MemoryMessageStorage(), MockedClock())
        self.broker.create_topic(TOPIC, partitions)
        self.saver = RecordingSaver()
        self.dead_letters = RecordingDeadLetters()
        self.commits: list[Mapping[Partition, int]] = []
        worker = WorkerSettings(
            batch_size=batch_size, batch_time_ms=batch_time_ms, retry_deadline=2.0
        )
        batch_saver = SaveAndDeadLetter(
            self.saver,
            self.dead_letters,  # type: ignore[arg-type]
            DeadLetterGuard(worker.dlq_guard_window, worker.dlq_guard_ratio),
            retry_deadline=worker.retry_deadline,
        )
        self.decoder = StandInDecoder()
        self.factory = StrategyFactory(
            Classify(self.decoder, 1_000_000),
            batch_saver,
            worker,
            normalize_thread=normalize_thread,
        )
        self.processor: StreamProcessor[KafkaPayload] = StreamProcessor(
            self.broker.get_consumer(GROUP), TOPIC, self.factory, IMMEDIATE, join_timeout=1.0
        )

    def produce(self, *values: bytes, partition: int = 0) -> None:
        producer = self.broker.get_producer()
        for value in values:
            producer.produce(Partition(TOPIC, partition), KafkaPayload(None, value, []))

    def run(self, iterations: int = 20, until: Callable[[], bool] | None = None) -> None:
        for _ in range(iterations):
            self.processor._run_once()
            if until is not None and until():
                return
            time.sleep(0.005)

    def committed(self, partition: int = 0) -> int | None:
        """The group's committed offset, read as a new member of the group would see it."""
        offsets: dict[Partition, int] = dict(self.broker._LocalBroker__offsets[GROUP])  # type: ignore[attr-defined]
        return offsets.get(Partition(TOPIC, partition))


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        (b"garbage", "invalid_json", None),  # rejected by the decode step, before batching
        (b"relay:1", "normalization_failed", "Relay rejects it"),  # by Relay, in its batch
    ],
)
def test_a_dead_letter_behind_an_unsaved_message_does_not_move_the_offset(
    bad: bytes, reason: str, detail: str | None, normalize_thread: bool
) -> None:
    harness = Harness(batch_size=3, normalize_thread=normalize_thread)
    harness.saver.gate.clear()  # the first batch's save hangs
    harness.produce(b"good:0", bad, b"good:2")

    harness.run(until=harness.saver.started.is_set)
    assert harness.saver.started.is_set()
    harness.run(10)
    assert harness.committed() is None, "committed while message 0 was not saved yet"
    assert harness.dead_letters.letters == [], "dead letters are produced inside the batch's save"

    harness.saver.gate.set()
    harness.run(until=lambda: harness.committed() == 3)
    assert harness.committed() == 3
    assert harness.saver.saved == [f"{0:032x}", f"{2:032x}"]
    assert [(letter.reason, letter.offset) for letter in harness.dead_letters.letters] == [
        (reason, 1)
    ]
    assert harness.dead_letters.letters[0].payload.value == bad
    if detail is not None:
        assert harness.dead_letters.letters[0].detail == detail


@pytest.mark.parametrize("seed", range(8))
def test_commits_never_pass_unsaved_work(seed: int, normalize_thread: bool) -> None:
    """Random streams of good, bad and skipped messages on two partitions, random batch sizes:
    after every loop iteration, each partition's committed offset only covers messages that
    were saved, dead-lettered or skipped."""
    import random

    rng = random.Random(seed)
    harness = Harness(
        partitions=2, batch_size=rng.randrange(1, 7), normalize_thread=normalize_thread
    )
    sent: dict[int, list[bytes]] = {0: [], 1: []}
    for number in range(40):
        partition = rng.randrange(2)
        value = rng.choice([f"good:{number}".encode(), f"relay:{number}".encode(), b"skip", b"{"])
        harness.produce(value, partition=partition)
        sent[partition].append(value)
    for _ in range(200):
        harness.saver.gate.set() if rng.random() < 0.7 else harness.saver.gate.clear()
        harness.processor._run_once()
        done = set(harness.saver.saved)
        letters = {(letter.partition, letter.offset) for letter in harness.dead_letters.letters}
        for partition, values in sent.items():
            committed = harness.committed(partition) or 0
            for offset, value in enumerate(values[:committed]):
                if value.startswith(b"good:"):
                    assert f"{int(value[5:]):032x}" in done, (partition, offset)
                elif value != b"skip":
                    assert (partition, offset) in letters, (partition, offset)
    harness.saver.gate.set()
    harness.processor.signal_shutdown()
    harness.processor.run()  # the drain flushes the partial batch
    assert {p: harness.committed(p) for p in sent} == {p: len(v) for p, v in sent.items()}


def test_the_next_batch_is_normalized_once_while_the_previous_one_is_saved(
    normalize_thread: bool,
) -> None:
    harness = Harness(batch_size=2, normalize_thread=normalize_thread)
    harness.saver.gate.clear()  # the first batch's save hangs
    harness.produce(b"good:0", b"good:1", b"good:2", b"good:3", b"good:4")
    harness.run(until=harness.saver.started.is_set)
    harness.run(20)
    # The second batch was normalized during the first one's save, and only once although the
    # save step kept refusing it; the fifth message waits, prepared, in the next batch.
    assert harness.decoder.finished == [[f"{0:032x}", f"{1:032x}"], [f"{2:032x}", f"{3:032x}"]]
    assert harness.committed() is None

    harness.saver.gate.set()
    harness.run(until=lambda: harness.committed() == 4)
    assert harness.committed() == 4
    assert len(harness.decoder.finished) == 2
    harness.processor.signal_shutdown()
    harness.processor.run()
    assert harness.committed() == 5
    assert harness.saver.saved == [f"{n:032x}" for n in range(5)]


def test_a_drain_with_a_batch_held_and_one_buffered_saves_both_without_waiting(
    normalize_thread: bool,
) -> None:
    """Closing the chain while a normalized batch waits for the save step and a partial batch
    sits in the buffer: the buffer's join retries its flush without polling the next step, so
    the normalize step must make progress in its own submit (arroyo's RunTask would reject
    until the join timeout and the partial batch would stay unsaved)."""
    harness = Harness(batch_size=2, normalize_thread=normalize_thread)
    harness.saver.gate.clear()  # the first batch's save hangs
    harness.produce(b"good:0", b"good:1", b"good:2", b"good:3", b"good:4")
    harness.run(until=harness.saver.started.is_set)
    harness.run(20)
    assert len(harness.decoder.finished) == 2  # batch 2 normalized and held; message 4 buffered
    threading.Timer(0.1, harness.saver.gate.set).start()
    started = time.monotonic()
    harness.processor.signal_shutdown()
    harness.processor.run()
    assert time.monotonic() - started < 0.9, "the drain waited for the join timeout (1 s)"
    assert harness.committed() == 5
    assert harness.saver.saved == [f"{n:032x}" for n in range(5)]


def test_a_failing_save_commits_nothing(normalize_thread: bool) -> None:
    harness = Harness(batch_size=2, normalize_thread=normalize_thread)
    harness.produce(b"good:0", b"good:1")
    harness.run(until=lambda: harness.committed() == 2)
    assert harness.committed() == 2

    harness.saver.fail = RuntimeError("a bug in the save")
    harness.produce(b"good:2", b"good:3")
    with pytest.raises(RuntimeError, match="a bug in the save"):
        harness.run(50)
    assert harness.committed() == 2


def test_transient_failures_are_retried_and_then_stop_the_worker(normalize_thread: bool) -> None:
    harness = Harness(batch_size=2, normalize_thread=normalize_thread)
    harness.saver.fail = TransientError("database unavailable")
    harness.produce(b"good:0", b"good:1")
    from consumer.errors import FatalError

    with pytest.raises(FatalError, match="still failing"):
        harness.run(2000)
    assert harness.committed() is None


def test_drain_commits_exactly_what_was_saved(normalize_thread: bool) -> None:
    harness = Harness(batch_size=100, normalize_thread=normalize_thread)
    harness.produce(b"good:0", b"garbage", b"good:2")
    harness.run(10)  # a partial batch: nothing flushed, nothing committed
    assert harness.saver.saved == []
    assert harness.committed() is None

    harness.processor.signal_shutdown()
    harness.processor.run()  # close + join: the partial batch is saved, then committed

    assert harness.saver.saved == [f"{0:032x}", f"{2:032x}"]
    assert harness.committed() == 3


def test_drain_abandons_a_save_that_outlives_the_deadline_and_commits_nothing_of_it(
    normalize_thread: bool,
) -> None:
    harness = Harness(batch_size=2, normalize_thread=normalize_thread)
    harness.produce(b"good:0", b"good:1")
    harness.run(until=lambda: harness.committed() == 2)
    harness.saver.gate.clear()  # the next save hangs past the 1 s join timeout
    harness.produce(b"good:2", b"good:3")
    harness.run(until=harness.saver.started.is_set)

    harness.processor.signal_shutdown()
    harness.processor.run()

    assert harness.committed() == 2
    harness.saver.gate.set()


def test_a_bug_in_normalization_stops_the_worker_and_commits_nothing(
    normalize_thread: bool,
) -> None:
    harness = Harness(batch_size=2, normalize_thread=normalize_thread)
    harness.produce(b"good:0", b"good:1")
    harness.run(until=lambda: harness.committed() == 2)
    harness.produce(b"good:2", b"crash:3", b"good:4")
    with pytest.raises(RuntimeError, match="a bug in normalization"):
        harness.run(50)
    assert harness.committed() == 2
    assert harness.saver.saved == [f"{0:032x}", f"{1:032x}"]


def test_the_next_batch_is_classified_while_a_normalized_one_waits_for_the_save(
    normalize_thread: bool,
) -> None:
    """With a batch saving and the next one normalized and waiting, the poll loop does not wait
    for the save on every message (it did: 50 ms each): the batch after is classified at once."""
    harness = Harness(batch_size=40, normalize_thread=normalize_thread)
    harness.saver.gate.clear()  # the first batch's save hangs
    harness.produce(*[f"good:{n}".encode() for n in range(80)])
    harness.run(
        500,
        until=lambda: len(harness.decoder.finished) == 2 and harness.decoder.prepared == 80,
    )
    assert len(harness.decoder.finished) == 2  # batch 1 saving, batch 2 normalized and waiting
    harness.produce(*[f"good:{n}".encode() for n in range(80, 120)])
    started = time.monotonic()
    for _ in range(40):
        harness.processor._run_once()
    elapsed = time.monotonic() - started
    assert harness.decoder.prepared == 120, "the third batch was not classified"
    # Only the last iteration, with the third batch full and nowhere to go, may wait.
    assert elapsed < 40 * HANDOFF_WAIT / 2, f"{elapsed:.2f}s: the loop waited for the save"
    harness.saver.gate.set()
    harness.processor.signal_shutdown()
    harness.processor.run()
    assert harness.committed() == 120
