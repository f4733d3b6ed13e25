"""Settings: defaults, then a TOML file, then the environment, then command-line flags.

Parsed once at start-up into frozen dataclasses and passed down; nothing below this module reads
`os.environ`. Every setting has one environment variable: the three of CONTRACT §8
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `REDIS_URL`) and `CONSUMER_<SECTION>_<NAME>` for the
rest (`CONSUMER_WORKER_BATCH_SIZE=500`). The file is `--config PATH`, else `$CONSUMER_CONFIG`,
else `config/consumer.toml` when it exists in the working directory.

Secrets (passwords in URLs, SASL and TLS key passwords) are held in `Secret` values that print as
`***`, so a settings object can be logged whole.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from consumer.errors import ConfigurationError

DEFAULT_CONFIG_FILE = Path("config/consumer.toml")


class Secret:
    """A string that never shows itself in `repr`, `str`, logs or metrics; `.reveal()` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fragments(self) -> set[str]:
        """What of it may show up in a message (`secret_fragments`)."""
        return secret_fragments(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretUrl(Secret):
    """A connection URL whose password is redacted when shown."""

    __slots__ = ()

    def fragments(self) -> set[str]:
        """What of its passwords may show up in a message (`secret_fragments`)."""
        found: set[str] = set()
        for password in _url_passwords(self._value)[1]:
            found |= secret_fragments(password.strip("'"))
        return found

    def __repr__(self) -> str:
        return f"SecretUrl({redact_url(self._value)!r})"

    def __str__(self) -> str:
        return redact_url(self._value)


# `scheme://` of a URL; anything else is read as a libpq `key=value` connection string.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A password given as a query parameter (libpq and redis-py read `password`, libpq also
# `sslpassword`): its value runs to the next `&name=` (an unencoded `&` in it stays hidden).
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?password=)(.*?)(?=&[A-Za-z_]+=|$)", re.S)
# In a `key=value` connection string: a password, quoted (with backslash escapes) or not.
_CONNINFO_PASSWORD = re.compile(r"(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
# Where parsers split a URL: a password holding one of these unencoded is cut in pieces that
# each may end up in an error message.
_SEPARATORS = re.compile(r"[#?/@&:%=\s]+")
MIN_FRAGMENT = 4  # shorter pieces of a password are not hidden everywhere in logs


def _url_passwords(url: str) -> tuple[str, list[str]]:
    """The URL shown without its passwords, and the passwords as written.

    Parsers disagree on where a password with an unencoded `#`, `?`, `/` or `@` ends (libpq
    reads up to the first `@`, urllib stops at `#`, `?` and `/`), so everything between the
    first `:` of the user part and the *last* `@` counts as the password: it is never shown,
    however a parser split it."""
    passwords: list[str] = []

    def hide(match: re.Match[str]) -> str:
        passwords.append(match.group(2))
        return f"{match.group(1)}***"

    if not _SCHEME.match(url):
        return _CONNINFO_PASSWORD.sub(hide, url), passwords
    scheme, rest = url.split("://", 1)
    rest = _QUERY_PASSWORD.sub(hide, rest)  # first: a password there may hold an `@`
    at = rest.rfind("@")
    if at != -1 and ":" in rest[:at]:
        user, password = rest[:at].split(":", 1)
        passwords.append(password)
        rest = f"{user}:***@{rest[at + 1 :]}"
    return f"{scheme}://{rest}", passwords


def redact_url(url: str) -> str:
    """The URL (or libpq `key=value` string) with its passwords hidden, wherever they are and
    whatever they hold: in the user part, or in a query parameter."""
    return _url_passwords(url)[0]


def secret_fragments(value: str) -> set[str]:
    """What of a secret may show up in a message: the whole, percent-decoded too, and the
    pieces a parser may have cut it into (at least MIN_FRAGMENT characters each)."""
    fragments: set[str] = set()
    for whole in (value, unquote(value)):
        fragments.add(whole)
        fragments.update(_SEPARATORS.split(whole))
    return {fragment for fragment in fragments if len(fragment) >= MIN_FRAGMENT}


# librdkafka settings whose values are secrets.
SECRET_KAFKA_KEYS = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.pem",
        "ssl_key",
    }
)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "ingest-occurrences"
    dlq_topic: str = "ingest-occurrences-dlq"
    group_id: str = "ingest-occurrences"
    auto_offset_reset: str = "earliest"
    strict_offset_reset: bool = True
    max_poll_interval_ms: int = 60_000
    session_timeout_ms: int = 30_000
    auto_commit_interval_ms: int = 1_000
    queued_max_messages_kbytes: int = 32_768
    max_message_bytes: int = 1_048_576
    # What one fetch may bring (librdkafka's defaults): a record that does not decompress within
    # `receive_message_max_bytes` is unreadable, recorded and skipped.
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    receive_message_max_bytes: int = 100_000_000
    # Free-form librdkafka settings (security.protocol, sasl.*, ssl.*) passed to every client.
    # Values of SECRET_KAFKA_KEYS are kept as Secret.
    extra: Mapping[str, str | Secret] = field(default_factory=dict)

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by consumers, producers and admin clients (secrets revealed)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for key, value in self.extra.items():
            config[key] = value.reveal() if isinstance(value, Secret) else value
        return config


@dataclass(frozen=True)
class DatabaseSettings:
    url: SecretUrl = field(
        default_factory=lambda: SecretUrl("postgresql://postgres@127.0.0.1:5432/consumer")
    )
    pool_min_size: int = 1
    pool_max_size: int = 4
    connect_timeout: float = 5.0
    checkout_timeout: float = 10.0
    statement_timeout_ms: int = 30_000
    # Passed to libpq as-is: sslmode, sslrootcert, sslcert, sslkey (CONTRACT §8: TLS passes through).
    sslmode: str = ""
    sslrootcert: str = ""
    sslcert: str = ""
    sslkey: str = ""


@dataclass(frozen=True)
class RedisSettings:
    url: SecretUrl = field(default_factory=lambda: SecretUrl("redis://127.0.0.1:6379/0"))
    key_prefix: str = "gc:"
    socket_timeout: float = 0.5
    model_cache_ttl: int = 300
    indexer_ttl: int = 7200
    indexer_read_namespaced: bool = False
    indexer_write_namespaced: bool = False
    link_cache_ttl: int = 3600
    project_options_ttl: int = 3600
    retry_interval: float = 5.0  # after a Redis failure, seconds without trying it again


@dataclass(frozen=True)
class WorkerSettings:
    batch_size: int = 500
    batch_time_ms: int = 200
    batch_bytes: int = 16 * 1024 * 1024
    processes: int = 1
    exit_when_idle: float = 0.0
    metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes from outside the host
    metrics_port: int = 9100
    healthcheck_file: str = ""
    join_timeout: float = 20.0
    retry_deadline: float = 300.0
    dlq_guard_window: int = 1000
    dlq_guard_ratio: float = 0.9
    nodestore_compressor: str = "isal"
    nodestore_compression_level: int = 1
    relay_process: str = "auto"
    log_level: str = "INFO"


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)


SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaSettings,
    "database": DatabaseSettings,
    "redis": RedisSettings,
    "worker": WorkerSettings,
}

# The contract's own environment variable names (CONTRACT §8).
ENV_ALIASES = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "DATABASE_URL": ("database", "url"),
    "REDIS_URL": ("redis", "url"),
}


def env_name(section: str, name: str) -> str:
    for env, target in ENV_ALIASES.items():
        if target == (section, name):
            return env
    return f"CONSUMER_{section.upper()}_{name.upper()}"


def _coerce(section: str, name: str, annotation: Any, raw: Any, source: str) -> Any:
    """Turn a raw value from a file, the environment or a flag into the field's type."""
    where = f"{section}.{name} (from {source})"
    if name == "extra":
        if isinstance(raw, str):
            pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                # Not the value itself: it may hold a password.
                raise ConfigurationError(f"{where}: expected key=value pairs separated by commas")
            raw = dict(pairs)
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{where}: expected a table of librdkafka settings")
        return {
            str(k): Secret(str(v)) if k in SECRET_KAFKA_KEYS else str(v) for k, v in raw.items()
        }
    if annotation is SecretUrl or annotation == "SecretUrl":
        if not isinstance(raw, str) or "://" not in raw:
            raise ConfigurationError(f"{where}: expected a URL such as scheme://host:port/...")
        return SecretUrl(raw)
    target = {"bool": bool, "int": int, "float": float, "str": str}.get(str(annotation), annotation)
    try:
        if target is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if target is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if target is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if target is str:
            if not isinstance(raw, str | int | float):
                raise ValueError(raw)
            return str(raw)
    except ValueError:
        raise ConfigurationError(
            f"{where}: {raw!r} is not a valid {getattr(target, '__name__', target)}"
        ) from None
    raise ConfigurationError(f"{where}: unsupported setting type {annotation!r}")


def _fields(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    result = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        result[f.name] = hint.__name__ if isinstance(hint, type) else hint
    return result


def load_settings(
    *,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings: defaults < file < environment < overrides (the command-line flags).

    Raises ConfigurationError naming the setting and where its bad value came from.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, tuple[Any, str]]] = {section: {} for section in SECTIONS}

    path = Path(config_file) if config_file else None
    if path is None and environ.get("CONSUMER_CONFIG"):
        path = Path(environ["CONSUMER_CONFIG"])
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except OSError as error:
            raise ConfigurationError(
                f"cannot read settings file {path}: {error.strerror}"
            ) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(f"settings file {path} is not valid TOML: {error}") from None
        for section, table in document.items():
            if section not in SECTIONS or not isinstance(table, dict):
                raise ConfigurationError(f"settings file {path}: unknown section [{section}]")
            known = _fields(SECTIONS[section])
            for name, raw in table.items():
                if name not in known:
                    raise ConfigurationError(
                        f"settings file {path}: unknown setting {section}.{name}"
                    )
                values[section][name] = (raw, str(path))

    for section, cls in SECTIONS.items():
        for name in _fields(cls):
            env = env_name(section, name)
            if env in environ:
                values[section][name] = (environ[env], f"${env}")

    for section, table in (overrides or {}).items():
        for name, raw in table.items():
            if raw is not None:
                values[section][name] = (raw, "command line")

    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        known = _fields(cls)
        kwargs = {
            name: _coerce(section, name, known[name], raw, source)
            for name, (raw, source) in values[section].items()
        }
        built[section] = cls(**kwargs)
    settings = Settings(**built)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Reject settings that cannot work, with a message an operator can act on."""
    w, k, d = settings.worker, settings.kafka, settings.database
    checks = [
        (w.batch_size >= 1, "worker.batch_size must be at least 1"),
        (w.batch_time_ms >= 1, "worker.batch_time_ms must be at least 1"),
        (w.batch_bytes >= 1024, "worker.batch_bytes must be at least 1024"),
        (1 <= w.processes <= 64, "worker.processes must be between 1 and 64"),
        (w.exit_when_idle >= 0, "worker.exit_when_idle must not be negative"),
        (0 <= w.metrics_port <= 65535, "worker.metrics_port must be a TCP port (0 disables)"),
        (0 < w.dlq_guard_ratio <= 1, "worker.dlq_guard_ratio must be in (0, 1]"),
        (w.dlq_guard_window >= 10, "worker.dlq_guard_window must be at least 10"),
        (
            w.nodestore_compressor in {"isal", "zlib"},
            "worker.nodestore_compressor must be isal or zlib",
        ),
        (
            w.nodestore_compressor != "isal" or 0 <= w.nodestore_compression_level <= 3,
            "worker.nodestore_compression_level must be 0..3 with isal",
        ),
        (
            w.nodestore_compressor != "zlib" or -1 <= w.nodestore_compression_level <= 9,
            "worker.nodestore_compression_level must be -1..9 with zlib",
        ),
        (
            w.relay_process in {"auto", "on", "off"},
            "worker.relay_process must be auto, on or off",
        ),
        (w.retry_deadline > 0, "worker.retry_deadline must be positive"),
        (w.join_timeout > 0, "worker.join_timeout must be positive"),
        (
            k.auto_offset_reset in {"earliest", "latest", "error"},
            "kafka.auto_offset_reset must be earliest, latest or error",
        ),
        (
            k.session_timeout_ms <= k.max_poll_interval_ms,
            "kafka.session_timeout_ms must not exceed kafka.max_poll_interval_ms",
        ),
        (
            w.join_timeout * 1000 < k.max_poll_interval_ms,
            "worker.join_timeout must be shorter than kafka.max_poll_interval_ms",
        ),
        (
            bool(k.topic) and bool(k.dlq_topic) and k.topic != k.dlq_topic,
            "kafka.topic and kafka.dlq_topic must be set and differ",
        ),
        (bool(k.group_id), "kafka.group_id must be set"),
        (
            k.fetch_max_bytes >= k.max_partition_fetch_bytes >= 1024,
            "kafka.fetch_max_bytes must be >= kafka.max_partition_fetch_bytes >= 1024",
        ),
        (
            k.receive_message_max_bytes >= k.fetch_max_bytes + 512,
            "kafka.receive_message_max_bytes must be at least kafka.fetch_max_bytes + 512",
        ),
        (
            d.pool_min_size >= 1 and d.pool_max_size >= d.pool_min_size,
            "database.pool_max_size must be >= database.pool_min_size >= 1",
        ),
        (
            settings.database.url.reveal().startswith(("postgresql://", "postgres://")),
            "DATABASE_URL must be a postgresql:// URL",
        ),
        (
            settings.redis.url.reveal().startswith(("redis://", "rediss://", "unix://")),
            "REDIS_URL must be a redis://, rediss:// or unix:// URL",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigurationError(message)


def secrets_of(settings: Settings) -> set[str]:
    """Every fragment of every secret in the settings, for `consumer.redaction`."""
    found = settings.database.url.fragments() | settings.redis.url.fragments()
    for value in settings.kafka.extra.values():
        if isinstance(value, Secret):
            found |= value.fragments()
    return found


def with_changes(settings: Settings, section: str, **changes: Any) -> Settings:
    """A copy of `settings` with some fields of one section replaced (used by tests and bench)."""
    return dataclasses.replace(
        settings, **{section: dataclasses.replace(getattr(settings, section), **changes)}
    )
