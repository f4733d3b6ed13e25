from __future__ import annotations

from pathlib import Path

import pytest

from consumer.errors import ConfigurationError
from consumer.settings import Secret, load_settings


def test_defaults_match_the_contract() -> None:
    settings = load_settings(environ={}, config_file="/dev/null")
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.topic == "ingest-occurrences"
    assert settings.kafka.dlq_topic == "ingest-occurrences-dlq"
    assert settings.database.url.reveal() == "postgresql://postgres@127.0.0.1:5432/consumer"
    assert settings.redis.url.reveal() == "redis://127.0.0.1:6379/0"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    config = tmp_path / "consumer.toml"
    config.write_text(
        '[worker]\nbatch_size = 10\nbatch_time_ms = 50\n[kafka]\ntopic = "from-file"\n'
    )
    settings = load_settings(
        config_file=config,
        environ={"CONSUMER_WORKER_BATCH_SIZE": "20", "KAFKA_BOOTSTRAP_SERVERS": "broker:9092"},
        overrides={"worker": {"batch_size": 30, "batch_time_ms": None}},
    )
    assert settings.worker.batch_size == 30  # flag
    assert settings.worker.batch_time_ms == 50  # file (flag not given)
    assert settings.kafka.topic == "from-file"
    assert settings.kafka.bootstrap_servers == "broker:9092"  # the contract's own variable


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CONSUMER_WORKER_BATCH_SIZE": "many"},
            "worker.batch_size (from $CONSUMER_WORKER_BATCH_SIZE)",
        ),
        ({"CONSUMER_WORKER_BATCH_SIZE": "0"}, "worker.batch_size must be at least 1"),
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL must be a postgresql:// URL"),
        ({"CONSUMER_KAFKA_AUTO_OFFSET_RESET": "middle"}, "kafka.auto_offset_reset"),
        ({"CONSUMER_KAFKA_DLQ_TOPIC": "ingest-occurrences"}, "must be set and differ"),
        ({"CONSUMER_WORKER_PROCESSES": "2.5"}, "worker.processes"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=message.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)"),
    ):
        load_settings(environ=environ, config_file="/dev/null")


def test_unknown_file_settings_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[worker]\nbatch_sise = 10\n")
    with pytest.raises(ConfigurationError, match=r"unknown setting worker\.batch_sise"):
        load_settings(config_file=config, environ={})


def test_secrets_never_print() -> None:
    settings = load_settings(
        environ={
            "DATABASE_URL": "postgresql://app:hunter2@db:5432/consumer",
            "REDIS_URL": "redis://:s3cret@cache:6379/0",
            "CONSUMER_KAFKA_EXTRA": "security.protocol=SASL_SSL,sasl.username=u,sasl.password=pa55",
        },
        config_file="/dev/null",
    )
    shown = repr(settings) + str(settings.database.url) + str(settings.redis.url)
    for secret in ("hunter2", "s3cret", "pa55"):
        assert secret not in shown
    assert "app:***@db" in str(settings.database.url)
    assert settings.kafka.client_config()["sasl.password"] == "pa55"
    assert isinstance(settings.kafka.extra["sasl.password"], Secret)
    assert settings.database.url.reveal() == "postgresql://app:hunter2@db:5432/consumer"
