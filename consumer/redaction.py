"""Secrets never reach the output (CONTRACT §8), whoever writes it.

Settings show their secrets as `***` (`consumer.settings.Secret`), but a library's message can
still carry one: libpq echoes the piece of a connection string it cannot parse, a host name or
database name cut out of a URL whose password holds an unencoded `/` or `@`, a traceback shows
the string it failed on. So, once the settings are loaded, every log line (message, exception,
stack) and the command's own error output pass through `scrub`, which replaces every fragment
of every secret (`consumer.settings.secrets_of`) by `***`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType

from consumer.settings import Settings, secrets_of

_pattern: re.Pattern[str] | None = None
_secrets: set[str] = set()


def scrub(text: str) -> str:
    """`text` with every known secret fragment replaced by `***`."""
    if _pattern is None:
        return text
    return _pattern.sub("***", text)


def remember(secrets: Iterable[str]) -> None:
    """Add secrets to those `scrub` hides (longest first, so a whole hides before its pieces)."""
    global _pattern
    _secrets.update(secret for secret in secrets if secret)
    if _secrets:
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, exception, stack) is scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def install(settings: Settings) -> None:
    """Hide the settings' secrets from every handler of the root logger, from uncaught
    exceptions (main thread and others) and from `report_crash`."""
    remember(secrets_of(settings))
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            old = handler.formatter
            handler.setFormatter(
                RedactingFormatter(old._fmt, old.datefmt) if old else RedactingFormatter()
            )
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


def report_crash(error: BaseException) -> None:
    """Print an exception and its traceback to stderr, scrubbed."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    sys.stderr.write(scrub(text))


def _excepthook(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, error, trace))))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    sys.stderr.write(scrub(f"Exception in thread {name}:\n{text}"))
