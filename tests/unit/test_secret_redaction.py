"""Secrets in settings never print (CONTRACT §8): URL passwords in either place libpq and
redis-py read them from, and a malformed librdkafka settings string is refused without being
echoed (the fault suite's security tests found both: `tests/faults/test_security.py`)."""

from __future__ import annotations

import pytest

from consumer.errors import ConfigurationError
from consumer.settings import SecretUrl, load_settings, redact_url


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
