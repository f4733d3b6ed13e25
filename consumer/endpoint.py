"""The worker's HTTP endpoint and its liveness signal.

* `/metrics`: Prometheus text format; with several worker processes, the sum over all of them
  (prometheus-client's multi-process mode, its folder set by the supervisor).
* `/healthz`: 200 while every worker process's main loop has polled Kafka recently, 503 (with
  the stale ones named) otherwise; a supervisor can probe it instead of, or as well as, the
  liveness files.

Liveness is a file per worker process whose modification time the process's Kafka consumer
updates on every poll (at most once a second). The consumer polls in every state: idle, paused by
backpressure, without partitions, while a slow save runs on the save thread; only a blocked main
loop stops it (a hung rebalance callback, a bug). The same file works for file-based probes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from arroyo.backends.kafka import KafkaPayload
from arroyo.types import BrokerValue
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app, multiprocess

from consumer.reader import RecordReader

logger = logging.getLogger(__name__)


class Liveness:
    """Touches `path` at most once per `interval` seconds."""

    def __init__(self, path: str | Path, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self._last = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.beat()

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        try:
            self.path.touch()
        except OSError as error:  # a full or read-only disk must not stop consumption
            logger.warning("cannot touch liveness file %s: %s", self.path, error)

    def remove(self) -> None:
        """At exit: a file left behind would read as a live worker until it grows stale."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as error:
            logger.warning("cannot remove liveness file %s: %s", self.path, error)


class LivenessConsumer(RecordReader):
    """The worker's Kafka consumer (`consumer.reader`) that beats the liveness file on every
    poll."""

    def __init__(self, configuration: dict[str, Any], liveness: Liveness) -> None:
        super().__init__(configuration)
        self._liveness = liveness

    def poll(self, timeout: float | None = None) -> BrokerValue[KafkaPayload] | None:
        self._liveness.beat()
        return super().poll(timeout)


def stale_files(paths: Iterable[Path], max_age: float) -> list[str]:
    """The liveness files not touched within `max_age` seconds (or missing)."""
    now = time.time()
    stale = []
    for path in paths:
        try:
            age = now - path.stat().st_mtime
        except OSError:
            stale.append(f"{path.name}: missing")
            continue
        if age > max_age:
            stale.append(f"{path.name}: {age:.0f}s old")
    return stale


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(
    host: str,
    port: int,
    liveness_files: Callable[[], Iterable[Path]],
    max_age: float,
    *,
    multiprocess_dir: str | None = None,
) -> _Server | None:
    """Serve /metrics and /healthz on a daemon thread; port 0 disables the endpoint."""
    if port == 0:
        return None
    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/livez"):
            stale = stale_files(liveness_files(), max_age)
            if stale:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [("stale: " + ", ".join(stale) + "\n").encode()]
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path in ("/metrics", "/"):
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    logger.info("metrics on http://%s:%d/metrics, liveness on /healthz", host, server.server_port)
    return server


def default_liveness_path(directory: str | None = None) -> Path:
    return Path(directory or tempfile.gettempdir()) / f"consumer-liveness-{os.getpid()}"
