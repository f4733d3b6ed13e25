"""`--exit-when-idle SECONDS`: stop the worker once nothing has arrived for that long.

The decode step touches the monitor for every message and the save step marks itself busy while
a batch is in flight; a watcher thread asks the processor to shut down (a normal drain: the
last batch is saved and committed) once the worker has been idle long enough.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class IdleMonitor:
    """Idle time counts from the first partition assignment (joining a group can take seconds);
    a worker that gets no assignment at all gives up after `startup_seconds`."""

    def __init__(
        self,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        startup_seconds: float | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.startup_seconds = (
            max(60.0, 10 * idle_seconds) if startup_seconds is None else startup_seconds
        )
        self._started = clock()
        self._armed = False
        self._last = self._started
        self._busy = 0
        self._lock = threading.Lock()

    def assigned(self) -> None:
        """Partitions were assigned: from now on, idleness counts."""
        self._armed = True
        self._last = self.clock()

    def touch(self) -> None:
        self._last = self.clock()

    def busy(self) -> None:
        with self._lock:
            self._busy += 1
            self._last = self.clock()

    def done(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last = self.clock()

    def is_idle(self) -> bool:
        with self._lock:
            now = self.clock()
            if not self._armed:
                return now - self._started >= self.startup_seconds
            return self._busy == 0 and now - self._last >= self.idle_seconds

    def watch(self, on_idle: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Start a daemon thread that calls `on_idle` once, when idle, unless `stop` is set."""

        def run() -> None:
            while not stop.wait(min(0.2, self.idle_seconds / 4 or 0.2)):
                if self.is_idle():
                    logger.info("idle for %.1fs: draining and stopping", self.idle_seconds)
                    on_idle()
                    return

        thread = threading.Thread(target=run, name="idle-monitor", daemon=True)
        thread.start()
        return thread
