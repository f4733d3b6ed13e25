"""Relay's calls in a process of their own, beside a worker process (`worker.relay_process`).

Why: in one worker process, Relay's store normalization (native code, plus the wait to take
the GIL back after each call) is most of the main thread's time, and the main thread bounds the
process's throughput while a core sits partly idle. Relay's calls release the GIL, but a thread
making them still has to take it back after every event, and with the main and save threads
running Python beside it that costs as much as it saves, or more. In a process of its own
Relay runs one batch at a time without sharing a GIL; what crosses is bytes both ways (each
event's JSON in, Relay's output JSON back), which the worker parses as it would anyway. Where
the cores are already busy with workers it gains nothing, hence `auto`: a Relay process only
while the host has more usable CPUs than the worker has processes. The measurements are in
docs/performance.md.

The process is the worker's child: it ignores SIGINT and SIGTERM (the worker drains on them and
still needs it for the batches it finishes), and exits when the worker closes the pipe or dies.
If it dies (killed, out of memory, a crash in Relay), the batch is sent once more to a new one;
if that one dies too on the same batch, the worker stops (`FatalError`) without committing it,
as a crash of Relay inside the worker would have stopped it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from consumer.errors import BadMessage, FatalError

logger = logging.getLogger(__name__)

# How long `close` waits for the process to exit once its pipe is closed.
EXIT_TIMEOUT = 5.0

# One request: (project id, the event's JSON) per event. One reply per event, in order: Relay's
# output JSON, or the message of Relay's rejection (a str).
Request = Sequence[tuple[int, bytes]]
Reply = list[bytes | str]


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota (a container
    started with `--cpus`)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    try:
        return max(1, min(cpus, math.ceil(int(quota) / int(period))))
    except (ValueError, ZeroDivisionError):
        return cpus


def wanted(mode: str, worker_processes: int, cpus: int | None = None) -> bool:
    """Whether a worker runs Relay in a process of its own (`mode` is `worker.relay_process`)."""
    if mode == "auto":
        return (usable_cpus() if cpus is None else cpus) > worker_processes
    return mode == "on"


def serve(conn: Connection) -> None:
    """The Relay process: normalize each request's events until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from consumer.pipeline.normalize import EventNormalizer

    normalizer = EventNormalizer()
    while True:
        try:
            request: Request = pickle.loads(conn.recv_bytes())  # noqa: S301 - our own parent
        except (EOFError, OSError):
            return
        reply: Reply = []
        for project_id, raw in request:
            try:
                reply.append(normalizer.relay_json(raw, project_id))
            except BadMessage as bad:
                reply.append(bad.detail or bad.reason)
        del request
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # the worker closed the pipe (stopping) or died: nothing to answer
            return


class RelayProcess:
    """The worker's side: `normalize` sends a batch's events and returns Relay's replies. Used
    by one thread at a time (the normalize thread); `close` may come from another."""

    def __init__(self, target: Callable[[Connection], None] = serve) -> None:
        """`target`: what the process runs (`serve`; tests give others)."""
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._closed = False
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        conn, child = self._context.Pipe()
        process = self._context.Process(
            target=self._target, args=(child,), name="relay", daemon=True
        )
        process.start()
        child.close()
        self._conn, self._process = conn, process

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def normalize(self, request: Request) -> Reply:
        """Relay's reply for every event of `request`, in order. FatalError if the process
        dies twice on it, or once it is closed."""
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        for attempt in (1, 2):
            conn = self._conn
            if self._closed or conn is None:
                raise FatalError("the Relay process is closed")
            try:
                conn.send_bytes(payload)
                reply: Reply = pickle.loads(conn.recv_bytes())  # noqa: S301 - our own child
            except (EOFError, OSError) as error:
                with self._lock:
                    if self._closed:
                        raise FatalError("the Relay process was closed during a batch") from None
                    code = None if self._process is None else self._process.exitcode
                    logger.warning(
                        "the Relay process died (exit code %s, %s) during a batch of %d events",
                        code,
                        type(error).__name__,
                        len(request),
                    )
                    self._stop()
                    if attempt == 2:
                        raise FatalError(
                            f"the Relay process died twice on one batch of {len(request)} events"
                        ) from None
                    self.restarts += 1
                    self._start()
                continue
            if len(reply) != len(request):
                raise FatalError(f"the Relay process replied {len(reply)} of {len(request)}")
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(EXIT_TIMEOUT)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(EXIT_TIMEOUT)
            self._process = None

    def close(self) -> None:
        """Close the pipe and wait for the process to exit (it finishes a batch in progress)."""
        with self._lock:
            self._closed = True
            self._stop()
