"""Secrets in settings never print (CONTRACT §8): URL passwords in either place libpq and
redis-py read them from, and a malformed librdkafka settings string is refused without being
echoed (the fault suite's security tests found both: `tests/faults/test_security.py`)."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from consumer import redaction
from consumer.errors import ConfigurationError
from consumer.settings import SecretUrl, load_settings, redact_url, secret_fragments


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:pw-1@db:5432/app", "postgresql://user:***@db:5432/app"),
        (
            "postgresql://user@db/app?password=pw-1&sslmode=require",
            "postgresql://user@db/app?password=***&sslmode=require",
        ),
        ("postgresql://user@db/app?sslpassword=pw-1", "postgresql://user@db/app?sslpassword=***"),
        ("redis://:pw-1@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache:6379/0?password=pw-1", "redis://cache:6379/0?password=***"),
        ("redis://cache:6379/0?db=2", "redis://cache:6379/0?db=2"),
    ],
)
def test_url_passwords_are_redacted_wherever_they_are(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert str(SecretUrl(url)) == shown
    assert "pw-1" not in repr(SecretUrl(url))
    assert SecretUrl(url).reveal() == url


def test_settings_loaded_from_the_environment_print_no_password() -> None:
    settings = load_settings(
        environ={
            "DATABASE_URL": "postgresql://u@db/app?password=pw-2",
            "REDIS_URL": "redis://cache/0?password=pw-3",
            "CONSUMER_KAFKA_EXTRA": "security.protocol=SASL_SSL,sasl.password=pw-4",
        },
        config_file="/dev/null",
    )
    shown = f"{settings!r} {settings.database.url} {settings.redis.url}"
    for secret in ("pw-2", "pw-3", "pw-4"):
        assert secret not in shown
    assert settings.kafka.client_config()["sasl.password"] == "pw-4"


def test_a_malformed_kafka_extra_is_a_configuration_error_that_hides_its_value() -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(
            environ={"CONSUMER_KAFKA_EXTRA": "sasl.password=pw-5,debug"},
            config_file="/dev/null",
        )
    assert "kafka.extra" in str(raised.value)
    assert "pw-5" not in str(raised.value)


# Every form libpq and redis-py accept a password in, with the characters that made parsers
# disagree on where it ends (issue 17: `db=postgresql://postgres:ab#Secret@…` on every start).
URL_SHAPES = [
    "postgresql://postgres:{pw}@db:5432/app",
    "postgres://postgres:{pw}@db/app?sslmode=require",
    "postgresql://postgres@db/app?password={pw}",
    "postgresql://postgres@db/app?password={pw}&application_name=worker",
    "postgresql://postgres@db/app?sslpassword={pw}",
    "host=db user=postgres password={pw} dbname=app",
    "host=db user=postgres password='{pw}' dbname=app",
    "redis://:{pw}@cache:6379/0",
    "redis://default:{pw}@cache/0",
    "rediss://cache:6380/0?password={pw}",
    "unix://:{pw}@/run/redis.sock?db=0",
]
PASSWORDS = [
    "Plain-Secret9",
    "Hash#Secret9",
    "Query?Secret9",
    "Slash/Secret9",
    "At@Secret9x",
    "Amp&Secret9",
    "Perc%zzSecret9",
    "Perc%41Secret9",
    "Colon:Secret9",
    "Mixed/#?@Secret9",
]


@pytest.mark.parametrize("shape", URL_SHAPES)
@pytest.mark.parametrize("password", PASSWORDS)
def test_no_url_shape_shows_its_password(shape: str, password: str) -> None:
    url = shape.format(pw=password)
    secret = SecretUrl(url)
    for shown in (redact_url(url), str(secret), repr(secret)):
        assert password not in shown
        for fragment in secret_fragments(password):
            assert fragment not in shown, f"{fragment!r} shows in {shown!r}"
    assert secret.fragments() >= {password}
    assert "***" in str(secret)


def test_the_host_and_database_stay_visible() -> None:
    assert redact_url("postgresql://postgres:ab#Secret@db:5432/app?sslmode=require") == (
        "postgresql://postgres:***@db:5432/app?sslmode=require"
    )


def test_logs_and_tracebacks_are_scrubbed_of_what_a_library_echoes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """libpq echoes the piece of a URL it cannot parse: a password cut at `/` becomes a port
    or a database name in its message, which the settings' own redaction never sees."""
    settings = load_settings(
        environ={"DATABASE_URL": "postgresql://postgres:Slash/Secret9@db/app"},
        config_file="/dev/null",
    )
    logger = logging.getLogger("test.redaction")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(handler)
    formatters = {h: h.formatter for h in logging.getLogger().handlers}
    hooks = (sys.excepthook, threading.excepthook)
    try:
        redaction.install(settings)
        try:
            raise ValueError('invalid integer value "Slash" for connection option "port"')
        except ValueError:
            logger.exception('database "Secret9@db/app" does not exist')
        try:
            raise RuntimeError("connection to Slash/Secret9@db failed")
        except RuntimeError as error:
            redaction.report_crash(error)
    finally:
        logging.getLogger().removeHandler(handler)
        for other, formatter in formatters.items():
            other.setFormatter(formatter)
        sys.excepthook, threading.excepthook = hooks
    err = capsys.readouterr().err
    assert "Secret9" not in err and "Slash" not in err
    assert err.count("***") >= 3
