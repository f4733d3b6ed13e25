"""`consumer run --processes N`: N worker processes in one consumer group, one endpoint.

Why processes and not arroyo's multiprocessing step: the CPU-bound work (decode, normalize,
derive tags, compress) is most of a batch's cost, and in `RunTaskWithMultiprocessing` only the
per-message part moves to the pool: the save path (tag steps, compression, SQL) stays in one
process, and every normalized event crosses a pickle and shared-memory copy on its way back. N
identical workers split the partitions instead: every stage scales with N, nothing is pickled,
a crash loses one worker's in-flight batch, not the pool, and the same design scales across
hosts unchanged. The measurement is in docs/performance.md ("Levers not taken").

The supervisor starts the workers with the `spawn` method (no inherited sockets, threads or
locks), serves `/metrics` as the sum of all workers (prometheus-client multi-process mode) and
`/healthz` from their liveness files, forwards SIGTERM/SIGINT so each worker drains, and exits
non-zero if any worker did (after asking the others to drain), so the service manager restarts
the whole set from the committed offsets.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from multiprocessing.connection import wait
from pathlib import Path
from types import FrameType

from consumer.settings import Settings

logger = logging.getLogger(__name__)


def _child(settings: Settings, liveness_path: str, log_level: int) -> None:
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s"
    )
    logging.getLogger("arroyo").setLevel(max(log_level, logging.WARNING))
    from consumer import redaction
    from consumer.worker import run_worker

    redaction.install(settings)

    raise SystemExit(run_worker(settings, liveness_path=liveness_path))


def liveness_max_age(settings: Settings) -> float:
    """How stale a liveness file may be: a rebalance join may legitimately block the loop."""
    return max(60.0, 2 * settings.worker.join_timeout + 10)


def supervise(settings: Settings) -> int:
    """Run `settings.worker.processes` workers until they all stop; return the exit code."""
    from consumer import endpoint

    workdir = Path(tempfile.mkdtemp(prefix="consumer-"))
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    # Read by prometheus-client when a worker imports it: every worker writes its samples there.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    base = (
        Path(settings.worker.healthcheck_file)
        if settings.worker.healthcheck_file
        else workdir / "liveness"
    )
    paths = [Path(f"{base}.{index}") for index in range(settings.worker.processes)]
    child_settings = dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, metrics_port=0)
    )
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_child,
            args=(child_settings, str(path), logging.getLogger().getEffectiveLevel()),
            name=f"worker-{index}",
        )
        for index, path in enumerate(paths)
    ]
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for child in children:
        child.start()
    server = endpoint.serve(
        settings.worker.metrics_host,
        settings.worker.metrics_port,
        lambda: [p for p, c in zip(paths, children, strict=True) if c.is_alive()],
        liveness_max_age(settings),
        multiprocess_dir=str(metrics_dir),
    )
    failed = False
    running = list(children)
    try:
        while running:
            ready = wait([child.sentinel for child in running])
            for child in [c for c in running if c.sentinel in ready]:
                child.join()
                running.remove(child)
                from prometheus_client import multiprocess

                if child.pid is not None:
                    multiprocess.mark_process_dead(child.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
                if child.exitcode != 0:
                    logger.error(
                        "%s exited with code %s: stopping the others", child.name, child.exitcode
                    )
                    failed = True
                    if not stopping:
                        stop_all()
                else:
                    logger.info("%s drained and stopped", child.name)
    finally:
        if server is not None:
            server.shutdown()
        for path in paths:  # those of workers that could not remove their own (killed)
            path.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
