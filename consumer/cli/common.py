"""What every command shares: its settings, and the defaults its help texts show."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from consumer import redaction
from consumer.settings import SECTIONS, Settings, load_settings


def settings_for(
    args: argparse.Namespace, overrides: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """The command's settings (file, environment, then `overrides` from its flags); the log
    level from --log-level, else the settings."""
    settings = load_settings(config_file=args.config, overrides=overrides or {})
    redaction.install(settings)
    logging.getLogger().setLevel((args.log_level or settings.worker.log_level).upper())
    return settings


def default(section: str, name: str) -> Any:
    """A setting's default, for help texts: written once, in consumer/settings.py."""
    return getattr(SECTIONS[section](), name)


def report_eviction(evicted: bool, settings: Settings) -> None:
    if not evicted:
        print(
            "consumer: warning: Redis unreachable, cached entries were not evicted; "
            f"they expire within {settings.redis.model_cache_ttl}s",
            file=sys.stderr,
        )
