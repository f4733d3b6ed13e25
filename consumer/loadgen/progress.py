"""A progress line for long `consumer produce` runs, on stderr.

On a terminal the line is redrawn in place a few times a second; elsewhere (a container's log)
a plain line is written every `log_every` seconds, so an endless load generator still says how
it is doing. Nothing is written for runs shorter than that.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(
        self,
        total: int | None,
        *,
        stream: TextIO | None = None,
        log_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.2 if self.tty else log_every
        self.clock = clock
        self.started = self.clock()
        self.shown_at = self.started
        self.done = 0
        self.drawn = False

    def update(self, done: int) -> None:
        """Record `done` messages sent so far; redraw when it is time to."""
        self.done = done
        now = self.clock()
        if now - self.shown_at >= self.every:
            self.shown_at = now
            self._show(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"produce: {self.done:,}"
        if self.total:
            share = self.done / self.total
            width = 24
            filled = int(width * share)
            bar = "#" * filled + "-" * (width - filled)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            text = f"produce: [{bar}] {self.done:,}/{self.total:,} {share:4.0%}"
            return f"{text}  {rate:,.0f} msg/s  {elapsed:,.0f}s elapsed, {left:,.0f}s left"
        return f"{text} messages  {rate:,.0f} msg/s  {elapsed:,.0f}s elapsed"

    def _show(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line, if one was drawn, so later output starts on a fresh line."""
        if self.drawn:
            self._show(self.clock())
            self.stream.write("\n")
            self.stream.flush()
