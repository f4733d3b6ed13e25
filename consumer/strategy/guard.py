"""The dead-letter guard: stop the worker when most recent traffic is being dead-lettered.

A stream that is mostly bad is a misconfiguration (wrong topic, wrong schema, a producer bug),
not bad data; dead-lettering all of it would empty the topic into the DLQ. The guard keeps the
outcomes of the last `window` messages and trips when at least `ratio` of a full window are
dead letters. A ratio of 0 disables it.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat

from consumer.errors import FatalError


class DeadLetterGuard:
    def __init__(self, window: int, ratio: float) -> None:
        self.window = window
        self.ratio = ratio
        self._outcomes: deque[bool] = deque(maxlen=window)

    def check(self, good: int, bad: int) -> None:
        """Record a batch's outcomes before its dead letters are produced; raise FatalError when
        the window is full and too bad (the state is then left unchanged)."""
        if self.ratio <= 0:
            return
        trial = deque(self._outcomes, maxlen=self.window)
        trial.extend(repeat(False, good))
        trial.extend(repeat(True, bad))
        bad_recent = sum(trial)
        if len(trial) == self.window and bad_recent >= self.ratio * self.window:
            raise FatalError(
                f"dead-letter guard: {bad_recent} of the last {self.window} messages are bad "
                f"(limit {self.ratio:.0%}); check the topic, the producers and the schema"
            )
        self._outcomes = trial
