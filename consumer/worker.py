"""One worker process: build the storage, the pipeline and the arroyo processor, run until told
to stop, drain, and say how it ended.

Exit codes: 0 after a drain (SIGTERM, SIGINT, `--exit-when-idle`); 1 when the worker had to stop
without committing (FatalError, a bug, an infrastructure outage past the retry deadline);
2 for bad settings. A supervisor restarts on non-zero; the worker resumes from the last commit.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from arroyo.backends.kafka.configuration import build_kafka_consumer_configuration, stats_callback
from arroyo.commit import IMMEDIATE
from arroyo.processing import StreamProcessor
from arroyo.types import Commit, Partition, Topic

from consumer import metrics
from consumer.endpoint import Liveness, LivenessConsumer, default_liveness_path
from consumer.errors import ConsumerError, FatalError, TransientError
from consumer.pipeline.message import MessageDecoder
from consumer.pipeline.relay_process import RelayProcess, wanted
from consumer.pipeline.save import OccurrencePipeline
from consumer.settings import Settings
from consumer.storage.store import Storage
from consumer.strategy.classify import Classify
from consumer.strategy.dlq import DeadLetterProducer, dead_letter_limit
from consumer.strategy.factory import StrategyFactory
from consumer.strategy.guard import DeadLetterGuard
from consumer.strategy.idle import IdleMonitor
from consumer.strategy.save_and_dead_letter import Pipeline, SaveAndDeadLetter

logger = logging.getLogger(__name__)

# Room in a dead letter for its headers (the message's own and the dead-letter ones).
DLQ_HEADROOM = 64 * 1024


def consumer_config(settings: Settings, *, group_id: str | None = None) -> dict[str, Any]:
    kafka = settings.kafka
    config = build_kafka_consumer_configuration(
        default_config={
            **kafka.client_config(),
            "auto.commit.interval.ms": kafka.auto_commit_interval_ms,
            "max.poll.interval.ms": kafka.max_poll_interval_ms,
            "session.timeout.ms": kafka.session_timeout_ms,
            "fetch.max.bytes": kafka.fetch_max_bytes,
            "max.partition.fetch.bytes": kafka.max_partition_fetch_bytes,
            "receive.message.max.bytes": kafka.receive_message_max_bytes,
        },
        group_id=group_id or kafka.group_id,
        auto_offset_reset=kafka.auto_offset_reset,
        strict_offset_reset=kafka.strict_offset_reset,
        queued_max_messages_kbytes=kafka.queued_max_messages_kbytes,
    )
    config["stats_cb"] = _stats
    return dict(config)


_owned: set[tuple[str, str]] = set()


# Per process: what the last statistics said, to notice commits and partitions moving away.
_committed: dict[tuple[str, str], int] = {}


def _stats(stats_json: str) -> None:
    """librdkafka statistics (every second): committed offset and lag per owned partition.

    A partition that moved to another worker gets lag 0 here, so the group-wide maximum (series
    are combined with `max` across processes, and by the alerts) shows its new owner's."""
    stats_callback(stats_json)
    try:
        stats = json.loads(stats_json)
    except ValueError:
        return
    owned: set[tuple[str, str]] = set()
    for topic_name, topic in (stats.get("topics") or {}).items():
        for partition_id, partition in (topic.get("partitions") or {}).items():
            if partition_id == "-1" or partition.get("fetch_state") in (None, "", "none"):
                continue
            key = (topic_name, partition_id)
            owned.add(key)
            committed = partition.get("committed_offset", -1001)
            if committed >= 0:
                if _committed.get(key) != committed:
                    metrics.LAST_COMMIT.set(time.time())
                _committed[key] = committed
                metrics.COMMITTED_OFFSET.labels(topic_name, partition_id).set(committed)
            lag = partition.get("consumer_lag", -1)
            if lag >= 0:
                metrics.CONSUMER_LAG.labels(topic_name, partition_id).set(lag)
    for topic_name, partition_id in set(_committed) - owned:
        metrics.CONSUMER_LAG.labels(topic_name, partition_id).set(0)
        del _committed[(topic_name, partition_id)]


@dataclass
class Resources:
    """What a worker process opens, and closes on the way out."""

    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        while self.closers:
            closer = self.closers.pop()
            try:
                closer()
            except Exception:
                logger.exception("error while closing %r", closer)


def build_factory(
    settings: Settings,
    *,
    idle: IdleMonitor | None = None,
    wrap_commit: Callable[[Commit], Commit] | None = None,
    wrap_pipeline: Callable[[Pipeline], Pipeline] | None = None,
) -> tuple[StrategyFactory, Resources]:
    """Open the pools and the producer and build the strategy factory (also used by tests)."""
    kafka = settings.kafka
    dlq_limit = dead_letter_limit(kafka.client_config(), kafka.dlq_topic)
    logger.info(
        "dead letters go to %s, up to %d bytes each (larger ones are recorded as a reference)",
        kafka.dlq_topic, dlq_limit,
    )  # fmt: skip
    if dlq_limit < kafka.max_message_bytes + DLQ_HEADROOM:
        logger.warning(
            "dead-letter topic %s takes records of at most %d bytes, less than the messages of up "
            "to kafka.max_message_bytes=%d it may have to dead-letter: those will be recorded as "
            "a reference only; raise its max.message.bytes to %d to keep them whole",
            kafka.dlq_topic, dlq_limit, kafka.max_message_bytes,
            kafka.max_message_bytes + DLQ_HEADROOM,
        )  # fmt: skip
    resources = Resources()
    storage = Storage.open(settings)
    resources.closers.append(storage.close)
    pipeline = OccurrencePipeline(storage)
    dead_letters = DeadLetterProducer(kafka.client_config(), kafka.dlq_topic, max_bytes=dlq_limit)
    resources.closers.append(dead_letters.close)
    batch_saver = SaveAndDeadLetter(
        wrap_pipeline(pipeline) if wrap_pipeline is not None else pipeline,
        dead_letters,
        DeadLetterGuard(settings.worker.dlq_guard_window, settings.worker.dlq_guard_ratio),
        retry_deadline=settings.worker.retry_deadline,
    )
    relay: RelayProcess | None = None
    if wanted(settings.worker.relay_process, settings.worker.processes):
        relay = RelayProcess()
        resources.closers.append(relay.close)
        logger.info("Relay's calls are made in a process of their own (pid %s)", relay.pid)
    factory = StrategyFactory(
        Classify(MessageDecoder(relay=relay), settings.kafka.max_message_bytes, idle),
        batch_saver,
        settings.worker,
        idle=idle,
        on_shutdown=resources.close,
        wrap_commit=wrap_commit,
        normalize_thread=relay is not None,
    )
    return factory, resources


# Container objects (dicts, lists) one event keeps alive from its decode to the end of its save,
# generously: about 45 after decoding (sentry-sdk events and Sentry's samples alike), a few more
# from the save steps.
CONTAINERS_PER_EVENT = 400


def tune_garbage_collector(batch_size: int) -> None:
    """Keep the cyclic collector out of the way of the batches in flight.

    The collector runs when allocations minus frees of container objects pass its first
    threshold. Up to three batches of decoded events are alive at a time, none of them garbage
    and none holding a reference cycle; with a threshold below a batch's worth the collector
    would run about once per batch, each run walking the batch's events, cold in memory. Above
    the growth of the batches in flight it does not run in steady state, and still collects
    cycles once that many more objects are alive than were. Long-lived objects (modules,
    caches) are frozen out of its sight once, after start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(200_000, CONTAINERS_PER_EVENT * batch_size), 10, 10)


class Worker:
    """One worker: `run()` blocks until drained (0) or failed (1); `stop()` asks it to drain
    (thread-safe, what the signal handlers and the idle monitor call)."""

    def __init__(
        self,
        settings: Settings,
        *,
        wrap_commit: Callable[[Commit], Commit] | None = None,
        wrap_pipeline: Callable[[Pipeline], Pipeline] | None = None,
        liveness_path: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.wrap_commit = wrap_commit
        self.wrap_pipeline = wrap_pipeline
        self.liveness = Liveness(
            liveness_path or settings.worker.healthcheck_file or default_liveness_path()
        )
        self.factory: StrategyFactory | None = None
        self._processor: StreamProcessor[Any] | None = None
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        self._stop_requested.set()
        if self._processor is not None:
            self._processor.signal_shutdown()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("signal %s: draining", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.liveness.remove()

    def _run(self) -> int:
        settings = self.settings
        metrics.configure_arroyo_metrics()
        idle = (
            IdleMonitor(settings.worker.exit_when_idle)
            if settings.worker.exit_when_idle > 0
            else None
        )
        try:
            factory, resources = build_factory(
                settings, idle=idle, wrap_commit=self.wrap_commit, wrap_pipeline=self.wrap_pipeline
            )
        except TransientError as error:
            logger.error("cannot start: %s", error)
            return 1
        self.factory = factory
        processor: StreamProcessor[Any] = StreamProcessor(
            LivenessConsumer(consumer_config(settings), self.liveness),
            Topic(settings.kafka.topic),
            factory,
            commit_policy=IMMEDIATE,
            join_timeout=settings.worker.join_timeout,
            stuck_detector_timeout=max(60, int(settings.kafka.max_poll_interval_ms / 1000)),
        )
        self._processor = processor
        if self._stop_requested.is_set():
            processor.signal_shutdown()
        stop_watch = threading.Event()
        if idle is not None:
            idle.watch(self.stop, stop_watch)
        metrics.UP.set(1)
        tune_garbage_collector(settings.worker.batch_size)
        try:
            processor.run()
        except ConsumerError as error:
            level = logging.ERROR if isinstance(error, FatalError) else logging.WARNING
            logger.log(level, "worker stopped: %s", error)
            return 1
        except Exception:
            logger.exception("worker crashed")
            return 1
        finally:
            stop_watch.set()
            metrics.UP.set(0)
            resources.close()
        logger.info("worker drained and stopped")
        return 0


def run_worker(
    settings: Settings,
    *,
    install_signals: bool = True,
    wrap_commit: Callable[[Commit], Commit] | None = None,
    liveness_path: str | Path | None = None,
) -> int:
    """Run one worker until drained or failed; return its exit code.

    `liveness_path`: the file this worker's Kafka consumer touches on every poll (default: the
    `worker.healthcheck_file` setting, else a file in the temp folder)."""
    worker = Worker(settings, wrap_commit=wrap_commit, liveness_path=liveness_path)
    if install_signals:
        worker.install_signal_handlers()
    return worker.run()


__all__ = ["Partition", "build_factory", "consumer_config", "run_worker"]
