"""CPU cost per event of each part of the pipeline, against the cost of normalizing and
compressing the same events in the same run.

    python -m consumer.bench.pipeline [--samples DIR] [--events N] [--runs R] [--batch B]
                                      [--per-message | --compare]

Two event mixes: Sentry's sample events (when the folder exists), each wrapped as an
occurrence, and events captured from the real sentry-sdk client. Every part is timed with the
process CPU clock over whole batches and divided by the number of events; the table shows the
median of the runs. The save steps are `save_generic_events`' own (`prepare_events`), over the
in-memory storage (`pipeline.memory_storage`): this measures CPU, not database round trips. The decode parts run in
the worker's order: per message up to the event built for Relay, then the batch's Relay calls
one after the other, then its Jobs (`--per-message`: one message at a time, Relay call
included, the order before; `--compare`: both, their runs alternating).

Categories:
* normalize: the Relay call as the worker makes it (JSON of the event in, Relay, JSON out), with
  Relay's user-agent parsing off; `user_agent` is the cached replacement for it.
* compress: encoding the two nodestore rows (JSON, the worker's compression (ISA-L, level 1
  by default), base64); the baseline compresses with Sentry's zlib at level 6.
* message decode: parsing the Kafka message (orjson) and validating it against its schema.
* free: freeing what the decoding allocated and the batch's documents once saved, on a line of
  its own so that no step is charged for it; that includes the parts of the message's event
  that the built event does not keep (Sentry's occurrence path drops `threads`, `exception`,
  `spans`...), freed when `event` is popped off the message.
* everything else is pipeline work: what the worker adds to Relay and compression.
The baseline is Relay normalization with its own user-agent parsing, called as the library
calls it (`StoreNormalizer.normalize_event`, its pass over the JSON for Python's NaN included),
plus compression.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from consumer.errors import BadMessage
from consumer.loadgen.occurrences import wrap_event
from consumer.metrics import Step
from consumer.pipeline import message as message_module
from consumer.pipeline.job import Job
from consumer.pipeline.memory_storage import MemoryStorage
from consumer.pipeline.message import BUILT_EVENT_TYPE, Occurrence
from consumer.pipeline.normalize import EventNormalizer, user_agent_contexts
from consumer.pipeline.save import prepare_events
from consumer.pipeline.user_agent import UserAgentContexts
from consumer.storage.nodestore import ZLIB_DEFAULT, encode_blob

# The save steps' names (metrics.Step) as the table shows them: "normalize" there is the cached
# user-agent parsing, "nodestore" the rows' encoding and compression.
STEP_PARTS: dict[str, str] = {"normalize": "user_agent", "nodestore": "compress"}
PIPELINE_PARTS = (
    "build event",
    "user_agent",
    "pull_out",
    "releases",
    "event_users",
    "plugin_tags",
    "interface_tags",
    "metadata",
    "environments",
    "event_metrics",
)
PARTS = (
    "message decode",
    *PIPELINE_PARTS,
    "free",
    "garbage collection",
    "normalize",
    "compress",
)
# Inside event_metrics: the event's JSON, which the nodestore step then completes rather than
# encoding the event again; in the baseline it is part of compressing.
EVENT_JSON = "  of which the event's JSON"
BASELINE_PARTS = ("baseline: normalize with Relay's UA", "baseline: compress")


@dataclass
class Mix:
    name: str
    messages: list[bytes]


def sample_mix(samples_dir: Path, count: int, project_id: int = 1) -> Mix:
    rng = random.Random(4)
    events = []
    for path in sorted(samples_dir.glob("*.json")):
        try:
            event = json.loads(path.read_bytes())
        except ValueError:
            continue  # the two files that are not valid JSON
        if isinstance(event.get("event"), dict):
            event = event["event"]  # an occurrence wrapper: its event
        if _sentry_accepts(event):
            events.append(event)
    messages = [wrap_event(events[i % len(events)], project_id, rng)[1] for i in range(count)]
    return Mix("sample events", messages)


def _sentry_accepts(event: dict[str, Any]) -> bool:
    """Whether Sentry's occurrence consumer takes the event (two samples fail its schemas)."""
    try:
        message_module.build_event(orjson.loads(wrap_event(event, 1, random.Random(0))[1]))
    except BadMessage:
        return False
    return True


def sdk_mix(count: int, project_id: int = 1) -> Mix:
    from consumer.loadgen.sdk import capture_events

    rng = random.Random(5)
    events = capture_events(min(count, 500), seed=5)
    messages = [wrap_event(events[i % len(events)], project_id, rng)[1] for i in range(count)]
    return Mix("sentry-sdk events", messages)


class _Clock:
    """Accumulates process CPU seconds per part: `with clock("part"): ...`. The cost of reading
    the clock itself is measured once and taken off every use."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.uses: dict[str, int] = {}
        self._part = ""
        self._started = 0.0
        self.overhead = 0.0
        for _ in range(2000):
            with self("(calibration)"):
                pass
        self.overhead = self.seconds.pop("(calibration)") / self.uses.pop("(calibration)")

    def __call__(self, part: str) -> _Clock:
        self._part = part
        return self

    def __enter__(self) -> None:
        self._started = time.process_time()

    def __exit__(self, *_exc: object) -> None:
        elapsed = time.process_time() - self._started - self.overhead
        self.seconds[self._part] = self.seconds.get(self._part, 0.0) + elapsed
        self.uses[self._part] = self.uses.get(self._part, 0) + 1


def run_once(
    messages: Sequence[bytes],
    batch: int,
    normalizer: EventNormalizer,
    user_agents: UserAgentContexts,
    *,
    per_message: bool = False,
) -> dict[str, float]:
    """CPU seconds per part for all `messages`, in batches of `batch`, as the worker runs them:
    the decode parts per message up to the event built for Relay, then the Relay calls of the
    batch one after the other, then its Jobs; then the save steps over the batch.

    With `per_message`, the decode parts run one message at a time, Relay call included, as
    the worker ran them before (each message's Job then made right after its Relay call)."""
    clock = _Clock()
    storage = MemoryStorage()
    storage.add_organization(1)
    projects = {1: storage.add_project(1, 1)}

    def step_clock(step: Step) -> _Clock:
        return clock(STEP_PARTS.get(step, step))

    for start in range(0, len(messages), batch):
        decode = _decode_per_message if per_message else _decode_two_phase
        jobs = decode(messages[start : start + batch], clock, normalizer)
        # Per batch, on the save thread: the save steps in save_generic_events' order.
        prepare_events(jobs, projects, storage, step_clock, user_agents)
        with clock(EVENT_JSON):
            for job in jobs:  # what event_metrics spends on the event's JSON, measured apart
                orjson.dumps(job.data)
        # Sentry encodes the occurrence document from its dict: the baseline does too.
        occurrences = [orjson.loads(job.occurrence_json) for job in jobs]
        with clock(BASELINE_PARTS[1]):
            for job, occurrence in zip(jobs, occurrences, strict=True):
                encode_blob(job.data, compression=ZLIB_DEFAULT)  # Sentry's zlib, level 6
                encode_blob(occurrence, compression=ZLIB_DEFAULT)
        # Freeing a batch's documents is real work; timed apart so no step is charged for it.
        with clock("free"):
            del jobs, job, occurrences, occurrence
        with clock("garbage collection"):
            gc.collect()
    return clock.seconds


def _library_normalize(normalizer: EventNormalizer, event: dict[str, Any]) -> None:
    """The baseline's Relay call: the library's own `normalize_event`, Relay parsing user
    agents, on the event's JSON (what the worker did before `relay_normalize`)."""
    store = normalizer.store_normalizer(1, normalize_user_agent=True)
    store.normalize_event(raw_event=orjson.dumps(event), json_loads=orjson.loads)


def _parse_and_build(value: bytes, clock: _Clock) -> tuple[Occurrence, dict[str, Any]]:
    """One message parsed and its event built for Relay (what `MessageDecoder.prepare` does),
    each part on its clock."""
    with clock("message decode"):
        message = message_module.parse(value)
    with clock("build event"):
        built = message_module.build_event(message)
        event = message.pop("event")
    # What the built event does not take of the message's event (Sentry's occurrence path keeps
    # only some of its keys: `threads`, `exception`, `spans`... are dropped) dies here: the
    # parsed message's memory freed, on the line of every other freeing.
    with clock("free"):
        del event
    if not isinstance(built, Occurrence) or built.event is None:
        raise RuntimeError("the bench mix must hold occurrences with events only")
    return built, message


def _decode_per_message(
    values: Sequence[bytes], clock: _Clock, normalizer: EventNormalizer
) -> list[Job]:
    """Per message, each one's parts in order (the `per_message` order)."""
    jobs: list[Job] = []
    for value in values:
        built, message = _parse_and_build(value, clock)
        with clock("compress"):  # the occurrence document's JSON, encoded for the nodestore
            occurrence_json = orjson.dumps(built.document)
        assert built.event is not None
        with clock("normalize"):
            data = normalizer.normalize(built.event, 1)
        with clock("build event"):
            job = Job(1, built.event_id, built.occurrence_id, data, occurrence_json, len(value))
        with clock(BASELINE_PARTS[0]):
            _library_normalize(normalizer, built.event)
        jobs.append(job)
        # The message and its event built for Relay die here (in the worker: when decode
        # returns).
        with clock("free"):
            del built, message
    return jobs


def _decode_two_phase(
    values: Sequence[bytes], clock: _Clock, normalizer: EventNormalizer
) -> list[Job]:
    """The same parts in the phases the decode steps run them (main thread): the Python before
    Relay per message, which keeps the message's JSON only, then every Relay call of the batch,
    then every Job."""
    prepared: list[tuple[Occurrence, bytes, bytes]] = []
    for value in values:
        built, message = _parse_and_build(value, clock)
        with clock("compress"):  # the occurrence document's JSON, encoded for the nodestore
            occurrence_json = orjson.dumps(built.document)
        with clock("normalize"):  # the event's JSON, for Relay
            event_json = orjson.dumps(built.event)
        prepared.append((built._replace(event={}), event_json, occurrence_json))
        # The parsed message and its event die here (in the worker: when `prepare` returns).
        with clock("free"):
            del built, message
    normalized: list[dict[str, Any]] = []
    for _, event_json, _ in prepared:
        with clock("normalize"):
            normalized.append(normalizer.normalize_json(event_json, 1, BUILT_EVENT_TYPE))
        event = orjson.loads(event_json)  # for the baseline, which encodes it itself
        with clock(BASELINE_PARTS[0]):
            _library_normalize(normalizer, event)
    with clock("build event"):
        jobs = [
            Job(1, built.event_id, built.occurrence_id, data, occurrence_json, len(value))
            for (built, _, occurrence_json), data, value in zip(
                prepared, normalized, values, strict=True
            )
        ]
    # The event JSON dies with the batch's preparations (in the worker: right after its Relay
    # call).
    with clock("free"):
        del prepared
    return jobs


def _pipeline(micros: dict[str, float]) -> float:
    return sum(micros.get(part, 0.0) for part in PIPELINE_PARTS) - micros.get(EVENT_JSON, 0.0)


@dataclass
class Report:
    mix: str
    events: int
    mean_message_bytes: float
    micros: dict[str, float]  # median µs per event, per part
    pipeline_runs: list[float]  # pipeline work of each run, in the order they ran

    @property
    def pipeline(self) -> float:
        """Pipeline work, the event's JSON counted with compression as in the baseline."""
        return _pipeline(self.micros)

    @property
    def total(self) -> float:
        return sum(self.micros[part] for part in PARTS)

    @property
    def baseline(self) -> float:
        return sum(self.micros[part] for part in BASELINE_PARTS)

    def table(self) -> str:
        lines = [
            f"{self.mix}: {self.events} events, mean message {self.mean_message_bytes:.0f} bytes "
            "(median of runs, CPU µs per event)",
        ]
        for part in (*PARTS, *BASELINE_PARTS):
            lines.append(f"  {part:<40} {self.micros[part]:8.1f}")
            if part == "event_metrics":
                lines.append(f"  {EVENT_JSON:<40} {self.micros[EVENT_JSON]:8.1f}")
        lines.append(f"  {'pipeline work, JSON aside':<40} {self.pipeline:8.1f}")
        runs = " ".join(f"{micros:.1f}" for micros in self.pipeline_runs)
        lines.append(f"  {'  of each run':<40} {runs}")
        lines.append(f"  {'total':<40} {self.total:8.1f}")
        lines.append(f"  {'baseline (normalize with UA + compress)':<40} {self.baseline:8.1f}")
        lines.append(f"  {'total / baseline':<40} {self.total / self.baseline:8.2f}")
        return "\n".join(lines)


# The orders of the decode parts `run_once` knows: the worker's, and the one it ran before.
BATCH_ORDER = "Relay per batch"
PER_MESSAGE_ORDER = "Relay per message"


def measure(
    mix: Mix,
    *,
    runs: int = 5,
    batch: int = 500,
    pause_gc: bool = True,
    orders: Sequence[str] = (BATCH_ORDER,),
) -> list[Report]:
    """Median CPU µs per event and part, one report per order of the decode parts (`orders`,
    see `run_once`); with two, their runs alternate (AB, BA, AB...) so that the noise of a
    shared machine falls on both alike.

    With `pause_gc` (the default) the cyclic garbage collector is paused during the runs and
    run once per batch instead (its own line), over the objects made since the warm-up
    (`gc.freeze`): JSON documents hold no cycles, and with the default thresholds its passes
    land in whichever part allocates. Without it, the collector runs as Python's defaults make
    it run (then mostly charged to message decode)."""
    normalizer = EventNormalizer()
    user_agents = user_agent_contexts()

    def once(order: str, messages: Sequence[bytes]) -> dict[str, float]:
        per_message = order == PER_MESSAGE_ORDER
        return run_once(messages, batch, normalizer, user_agents, per_message=per_message)

    for order in orders:  # warm up: caches, allocator
        once(order, mix.messages[:batch])
    gc.collect()
    if pause_gc:
        gc.freeze()
        gc.disable()
    per_run: dict[str, list[dict[str, float]]] = {order: [] for order in orders}
    try:
        for index in range(runs):
            for order in orders if index % 2 == 0 else orders[::-1]:
                per_run[order].append(once(order, mix.messages))
    finally:
        if pause_gc:
            gc.enable()
            gc.unfreeze()
    count = len(mix.messages)
    name = mix.name if len(orders) == 1 else None
    reports = []
    for order, seconds in per_run.items():
        micros = {
            part: statistics.median(run.get(part, 0.0) for run in seconds) / count * 1e6
            for part in (*PARTS, *BASELINE_PARTS, EVENT_JSON)
        }
        reports.append(
            Report(
                name or f"{mix.name}, {order}",
                count,
                statistics.mean(map(len, mix.messages)),
                micros,
                [_pipeline({part: s / count * 1e6 for part, s in run.items()}) for run in seconds],
            )
        )
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_samples = Path(__file__).resolve().parents[3] / "shared/fixtures/sentry-samples"
    parser.add_argument("--samples", type=Path, default=default_samples)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--default-gc", action="store_true", help="leave the garbage collector as Python has it"
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument(
        "--per-message",
        action="store_true",
        help="run each message's decode parts, Relay call included, one message at a time",
    )
    order.add_argument(
        "--compare",
        action="store_true",
        help="both orders of the decode parts, their runs alternating (A/B)",
    )
    args = parser.parse_args(argv)
    orders = [PER_MESSAGE_ORDER if args.per_message else BATCH_ORDER]
    if args.compare:
        orders = [PER_MESSAGE_ORDER, BATCH_ORDER]
    mixes = [sdk_mix(args.events)]
    if args.samples.is_dir():
        mixes.insert(0, sample_mix(args.samples, args.events))
    for mix in mixes:
        reports = measure(
            mix, runs=args.runs, batch=args.batch, pause_gc=not args.default_gc, orders=orders
        )
        for report in reports:
            print(report.table())  # noqa: T201 - a command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
