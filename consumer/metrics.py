"""Every Prometheus metric of the worker, declared once (CONTRACT §7), and the arroyo bridge.

Label values that name things in code (`Outcome`, `Step`, `Cache`, `Table`) are `Literal` unions,
so a typo fails type checking. Update metrics per batch, not per event: a labelled `inc()`
looks up its child and takes a lock, which per event adds up.

With `--processes N` every worker process writes its samples to a shared folder
(`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor before any worker starts) and the supervisor
serves the sum on one `/metrics` endpoint.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Literal

from arroyo.utils.metric_defs import MetricName
from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

Outcome = Literal["saved", "skipped", "dead_lettered"]
Step = Literal[
    "organizations",
    "releases",
    "event_users",
    "plugin_tags",
    "interface_tags",
    "metadata",
    "environments",
    "event_metrics",
    "nodestore",
    "groups",
    "decode",
    "normalize",
    "pull_out",
    "projects",
    "dead_letters",
]
Cache = Literal[
    "model", "indexer", "release_link", "environment_link", "project_options", "user_agent"
]
CacheResult = Literal["hit", "miss", "error", "stale", "invalid"]
EventWarning = Literal["dist_too_long"]
GroupOutcome = Literal["created", "updated", "regressed"]
Table = Literal[
    "nodestore_node",
    "sentry_release",
    "sentry_release_project",
    "sentry_distribution",
    "sentry_environment",
    "sentry_environmentproject",
    "sentry_project",
    "sentry_groupedmessage",
    "sentry_grouphash",
    "sentry_groupenvironment",
    "sentry_grouprelease",
    "sentry_activity",
    "sentry_grouphistory",
]

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)

MESSAGES = Counter(
    "consumer_messages", "Messages handled, by outcome and reason.", ["outcome", "reason"]
)
BATCH_SIZE = Histogram("consumer_batch_size", "Messages per batch.", buckets=SIZE_BUCKETS)
BATCH_BYTES = Histogram(
    "consumer_batch_bytes",
    "Bytes of message values per batch.",
    buckets=(1e3, 1e4, 1e5, 5e5, 1e6, 4e6, 16e6, 64e6),
)
BATCH_DURATION = Histogram(
    "consumer_batch_duration_seconds",
    "Time to save one batch, from the save step's start to its offsets being handed to commit.",
    buckets=LATENCY_BUCKETS,
)
STEP_DURATION = Histogram(
    "consumer_save_step_duration_seconds",
    "Time per batch spent in each step of save_generic_events (and the steps around it).",
    ["step"],
    buckets=LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "consumer_cache_requests",
    "Cache lookups by cache and result (hit, miss, error...).",
    ["cache", "result"],
)
ROWS_WRITTEN = Counter("consumer_rows_written", "Rows inserted or updated, by table.", ["table"])
DEAD_LETTERS = Counter(
    "consumer_dead_letters", "Messages produced to the dead-letter topic, by reason.", ["reason"]
)
DEAD_LETTERS_REPLACED = Counter(
    "consumer_dead_letters_replaced",
    "Dead letters recorded as a reference (origin, size, digest) because the dead-letter topic "
    "would not take them whole.",
)
SAVE_FAILURES = Counter(
    "consumer_save_failures",
    "Batch save attempts that failed, by kind (transient, fatal).",
    ["kind"],
)
# Exported at zero from the start: a series born at 1 has no earlier sample, so `increase()` in
# the alerts would miss the first failure.
for _kind in ("transient", "fatal"):
    SAVE_FAILURES.labels(_kind)
COMMITTED_OFFSET = Gauge(
    "consumer_committed_offset",
    "Last offset committed to Kafka for each partition (the next offset to read).",
    ["topic", "partition"],
    multiprocess_mode="max",
)
CONSUMER_LAG = Gauge(
    "consumer_lag",
    "Messages between the committed offset and the partition's end, per partition.",
    ["topic", "partition"],
    multiprocess_mode="max",
)
LAST_COMMIT = Gauge(
    "consumer_last_commit_timestamp_seconds",
    "Unix time of the last offset commit.",
    multiprocess_mode="max",
)
EVENT_AGE = Histogram(
    "consumer_event_age_seconds",
    "Age of an event when it is saved: now minus the event's `received` time.",
    buckets=AGE_BUCKETS,
)
PAUSED = Gauge(
    "consumer_paused",
    "1 while consumption is paused because saves are failing.",
    multiprocess_mode="max",
)
UP = Gauge("consumer_up", "1 while a worker process is running.", multiprocess_mode="livesum")
EVENT_PROCESSING_FLAGS = Counter(
    "consumer_event_processing_flags",
    "Events whose _metrics carry a processing flag (flag.processing.error / .fatal).",
    ["flag"],
)
GROUPS = Counter(
    "consumer_groups",
    "Groups changed by saved occurrences: created, updated (counted occurrences) or regressed.",
    ["outcome"],
)
EVENT_WARNINGS = Counter(
    "consumer_event_warnings",
    "Events saved with a part dropped instead of failing, by warning (e.g. dist_too_long).",
    ["warning"],
)


def total(counter: Counter, **labels: str) -> float:
    """Sum of a counter's samples whose labels include `labels` (for summaries and tests)."""
    result = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                result += sample.value
    return result


def observe_step(step: Step, seconds: float) -> None:
    STEP_DURATION.labels(step).observe(seconds)


def count_cache(cache: Cache, result: CacheResult, amount: int = 1) -> None:
    if amount:
        CACHE_REQUESTS.labels(cache, result).inc(amount)


def count_rows(table: Table, amount: int) -> None:
    if amount:
        ROWS_WRITTEN.labels(table).inc(amount)


def count_warning(warning: EventWarning, amount: int = 1) -> None:
    if amount:
        EVENT_WARNINGS.labels(warning).inc(amount)


def count_groups(outcome: GroupOutcome, amount: int) -> None:
    if amount:
        GROUPS.labels(outcome).inc(amount)


def count_messages(outcome: Outcome, reason: str, amount: int = 1) -> None:
    if amount:
        MESSAGES.labels(outcome, reason).inc(amount)


# ----------------------------------------------------------------------------- arroyo bridge

# arroyo reports these as sums over a flush window, not as individual durations: export them as
# counters of seconds so `rate()` gives the share of wall time spent in each phase.
_WINDOW_SUMS = frozenset(
    {
        "arroyo.consumer.poll.time",
        "arroyo.consumer.processing.time",
        "arroyo.consumer.backpressure.time",
        "arroyo.consumer.dlq.time",
        "arroyo.consumer.join.time",
        "arroyo.consumer.callback.time",
        "arroyo.consumer.shutdown.time",
    }
)
# Tags with bounded values; anything else is dropped to keep cardinality fixed.
_ALLOWED_TAGS = frozenset({"callback_name", "status", "flush_reason", "partition_index", "reason"})


def _prom_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


class ArroyoMetrics:
    """arroyo's `Metrics` protocol on top of prometheus-client: `increment` → counter,
    `gauge` → gauge, `timing` (seconds) → histogram, window sums → `_seconds_total` counters.

    Metrics are created on first use with the allowed tag names of that first call; a later call
    with other tags fills the missing labels with "".
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, tuple[Counter | Gauge | Histogram, tuple[str, ...]]] = {}

    def _get(
        self, kind: str, name: str, tags: Mapping[str, str] | None
    ) -> tuple[Counter | Gauge | Histogram, tuple[str, ...]]:
        key = f"{kind}:{name}"
        found = self._metrics.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._metrics.get(key)
            if found is not None:
                return found
            labels = tuple(sorted(t for t in (tags or {}) if t in _ALLOWED_TAGS))
            base = _prom_name(name)
            doc = f"arroyo metric {name}"
            metric: Counter | Gauge | Histogram
            if kind == "increment":
                metric = Counter(base, doc, labels)
            elif kind == "gauge":
                metric = Gauge(base, doc, labels, multiprocess_mode="max")
            elif kind == "window":
                metric = Counter(f"{base}_seconds", doc, labels)
            else:
                metric = Histogram(f"{base}_seconds", doc, labels, buckets=LATENCY_BUCKETS)
            self._metrics[key] = (metric, labels)
            return metric, labels

    @staticmethod
    def _bind(
        metric: Counter | Gauge | Histogram, labels: tuple[str, ...], tags: Mapping[str, str] | None
    ) -> Counter | Gauge | Histogram:
        if not labels:
            return metric
        tags = tags or {}
        return metric.labels(*(str(tags.get(label, "")) for label in labels))

    def increment(
        self, name: MetricName, value: int | float = 1, tags: Mapping[str, str] | None = None
    ) -> None:
        metric, labels = self._get("increment", name, tags)
        bound = self._bind(metric, labels, tags)
        assert isinstance(bound, Counter)
        bound.inc(value)

    def gauge(
        self, name: MetricName, value: int | float, tags: Mapping[str, str] | None = None
    ) -> None:
        metric, labels = self._get("gauge", name, tags)
        bound = self._bind(metric, labels, tags)
        assert isinstance(bound, Gauge)
        bound.set(value)

    def timing(
        self, name: MetricName, value: int | float, tags: Mapping[str, str] | None = None
    ) -> None:
        kind = "window" if name in _WINDOW_SUMS else "timing"
        metric, labels = self._get(kind, name, tags)
        bound = self._bind(metric, labels, tags)
        if isinstance(bound, Counter):
            bound.inc(max(0.0, float(value)))
        else:
            assert isinstance(bound, Histogram)
            bound.observe(float(value))


_ARROYO_METRICS = ArroyoMetrics()


def configure_arroyo_metrics() -> None:
    """Route arroyo's metrics to Prometheus; call before building a consumer (idempotent)."""
    from arroyo import configure_metrics

    configure_metrics(_ARROYO_METRICS, force=True)
    # The phase shares exist from the start (at 0), so "no backpressure yet" reads as 0%,
    # not as no data.
    for name in sorted(_WINDOW_SUMS):
        _ARROYO_METRICS._get("window", name, None)
