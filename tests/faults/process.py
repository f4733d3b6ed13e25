"""Worker processes as an operator runs them: `python -m consumer run`, configured through the
environment, killed with SIGKILL like a crash or stopped with SIGTERM like a deploy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.services import ROOT


@dataclass
class WorkerProcess:
    """One `consumer run` process; its output goes to `log`."""

    name: str
    args: Sequence[str]
    env: Mapping[str, str]
    log: Path
    global_args: Sequence[str] = ()
    started_at: float = field(default=0.0, init=False)
    stopped_by_suite: bool = field(default=False, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            log.write(f"--- {self.name} started at {time.time():.3f}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "consumer", "--config", os.devnull),
                    *self.global_args,
                    *("run", *self.args),
                ],
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        self.started_at = time.time()
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no cleanup, as a crash or an OOM kill."""
        assert self._process is not None
        self.stopped_by_suite = True
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(30)

    def terminate(self, timeout: float = 60.0, signum: int = signal.SIGTERM) -> int:
        """SIGTERM (or `signum`) and wait for the drain; return the exit code (raises
        subprocess.TimeoutExpired if the drain hangs)."""
        assert self._process is not None
        self.stopped_by_suite = True
        if self._process.poll() is None:
            self._process.send_signal(signum)
        return self._process.wait(timeout)

    def ensure_dead(self) -> None:
        if self.alive():
            self.kill()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])
