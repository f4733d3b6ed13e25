"""Secrets and transport security on real services (issue 8, last paragraph; CONTRACT §8).

* Passwords (PostgreSQL, Redis, Kafka SASL) never show in the worker's logs, its metrics or the
  errors of a start that fails, even with librdkafka's configuration debugging on.
* Kafka security settings (`kafka.extra`: security.protocol, sasl.*, ssl.*) reach every Kafka
  client: the worker consumes and dead-letters through the private broker's SASL_SSL listener,
  `consumer dlq replay` replays through it, an admin client creates a topic through it, and a
  client without them is refused there.
* PostgreSQL TLS settings (`database.sslmode`, `sslrootcert`, `sslcert`, `sslkey`) reach libpq:
  verify-full against the right authority connects over TLS, against another one fails; a role
  that may only log in with a client certificate logs in with `sslcert`/`sslkey`.
* The metrics endpoint listens on `worker.metrics_host`, and only there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.kafka_admin import create_topic
from consumer.settings import load_settings
from consumer.storage.migrate import migrate
from scripts.services import HOST, ROOT, Stack
from tests.faults.process import WorkerProcess
from tests.faults.sampler import OffsetSampler
from tests.faults.stack import Certificates, FaultStack, private_folder
from tests.faults.traffic import Occurrences
from tests.faults.verdict import end_offsets, read_dead_letters
from tests.integration.helpers import free_port

pytestmark = pytest.mark.faults

METRICS_HOST = "127.0.0.2"  # on Linux the whole of 127.0.0.0/8 is loopback


def _run_consumer(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "--config", os.devnull, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=ROOT,
    )
    return result.returncode, result.stdout + result.stderr


def _base_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CONSUMER_")
        and key not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REDIS_URL")
    }


def _extra(settings: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in settings.items())


@dataclass
class PasswordRedis:
    port: int
    password: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{HOST}:{self.port}/0"


@pytest.fixture(scope="module")
def password_redis() -> Iterator[PasswordRedis]:
    """A Redis of this module that answers only with its password."""
    command = shutil.which("redis-server")
    assert command is not None
    port, password = free_port(), f"redis-{secrets.token_hex(12)}"
    process = subprocess.Popen(
        [command, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
         "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis(host=HOST, port=port, password=password).ping():
                break
        except redis.RedisError:
            time.sleep(0.1)
    yield PasswordRedis(port, password, process)
    process.terminate()
    process.wait(20)


@dataclass
class PasswordRole:
    name: str
    password: str
    database_url: str  # without the password

    def url(self, password: str | None = None) -> str:
        user = f"{self.name}:{password or self.password}"
        return self.database_url.replace(f"//{self.name}@", f"//{user}@", 1)


@pytest.fixture(scope="module")
def password_role(stack: FaultStack) -> PasswordRole:
    """A database and a role of the private server that must log in with a password (SCRAM)."""
    unique = uuid.uuid4().hex[:8]
    name, password = f"secret_{unique}", f"pg-{secrets.token_hex(12)}"
    database = stack.create_database(f"security_{unique}")
    migrate(database)
    with psycopg.connect(stack.database_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}'")
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        hba.write_text(f"host all {name} {HOST}/32 scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    url = database.replace("//postgres@", f"//{name}@", 1)
    role = PasswordRole(name, password, url)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(role.url("wrong"), connect_timeout=5).close()
    psycopg.connect(role.url(), connect_timeout=5).close()
    return role


@dataclass
class SecuredRun:
    output: str
    metrics: str
    exit_code: int
    secrets: dict[str, str]
    metrics_port: int
    topic: str
    dlq_topic: str
    group: str
    saved: int
    sent_good: int
    refused_elsewhere: bool


@pytest.fixture(scope="module")
def secured_run(
    stack: FaultStack,
    password_redis: PasswordRedis,
    password_role: PasswordRole,
    tmp_path_factory: pytest.TempPathFactory,
) -> SecuredRun:
    """One worker through SASL_SSL, with passwords for PostgreSQL and Redis, librdkafka's
    configuration debugging on, DEBUG logs, metrics on 127.0.0.2."""
    unique = uuid.uuid4().hex[:8]
    topic, group = f"security-{unique}", f"security-{unique}"
    dlq_topic = f"{topic}-dlq"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for future in admin.create_topics(
        [NewTopic(topic, num_partitions=2), NewTopic(dlq_topic, num_partitions=1)]
    ).values():
        future.result(timeout=30)
    with psycopg.connect(password_role.url(), autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO sentry_organization (slug, name) VALUES ('sec', 'sec') RETURNING id"
        ).fetchone()
        assert org is not None
        project = conn.execute(
            "INSERT INTO sentry_project (organization_id, slug, name) VALUES (%s, 'p', 'p') "
            "RETURNING id",
            (org[0],),
        ).fetchone()
        assert project is not None
    occurrences = Occurrences([project[0]], seed=11)
    good = occurrences.good(40)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for record in good:
        producer.produce(topic, value=record.value, key=record.key)
    producer.produce(topic, value=b"not json", key=b"bad")
    assert producer.flush(30) == 0

    # `conf` debugging makes librdkafka print its whole configuration at start-up.
    kafka = {**stack.sasl_client_settings(), "debug": "conf"}
    metrics_port = free_port()
    log = tmp_path_factory.mktemp("security") / "worker.log"
    worker = WorkerProcess(
        name="secured",
        args=[
            *("--topic", topic, "--group", group, "--dlq-topic", dlq_topic),
            *("--metrics-port", str(metrics_port)),
        ],
        env={
            **_base_env(),
            "KAFKA_BOOTSTRAP_SERVERS": stack.sasl_bootstrap,
            "CONSUMER_KAFKA_EXTRA": _extra(kafka),
            "DATABASE_URL": password_role.url(),
            "REDIS_URL": password_redis.url,
            "CONSUMER_REDIS_KEY_PREFIX": f"security:{unique}:",
            "CONSUMER_WORKER_METRICS_HOST": METRICS_HOST,
            "CONSUMER_WORKER_LOG_LEVEL": "DEBUG",
        },
        log=log,
    ).start()
    try:
        ends = end_offsets(stack.kafka_bootstrap, topic, 2)
        offsets = OffsetSampler(stack.kafka_bootstrap, topic, group, partitions=2)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.alive():
            sample = offsets.sample()
            if sample is not None and sample.offsets == ends:
                break
            time.sleep(0.5)
        offsets.close()
        with urllib.request.urlopen(f"http://{METRICS_HOST}:{metrics_port}/metrics") as answer:
            metrics = answer.read().decode()
        with urllib.request.urlopen(f"http://{METRICS_HOST}:{metrics_port}/healthz") as answer:
            metrics += answer.read().decode()
        with socket.socket() as probe:
            refused_elsewhere = probe.connect_ex(("127.0.0.1", metrics_port)) != 0
        code = worker.terminate()
    finally:
        worker.ensure_dead()
    with psycopg.connect(password_role.url()) as conn:
        saved = conn.execute(
            "SELECT count(*) FROM nodestore_node WHERE id = ANY(%s)",
            ([record.event_node for record in good],),
        ).fetchone()
    assert saved is not None
    return SecuredRun(
        output=worker.output(),
        metrics=metrics,
        exit_code=code,
        secrets={
            "PostgreSQL password": password_role.password,
            "Redis password": password_redis.password,
            "SASL password": stack.sasl_password,
        },
        metrics_port=metrics_port,
        topic=topic,
        dlq_topic=dlq_topic,
        group=group,
        saved=int(saved[0]),
        sent_good=len(good),
        refused_elsewhere=refused_elsewhere,
    )


def test_the_worker_works_through_sasl_ssl_and_passwords(
    secured_run: SecuredRun, stack: FaultStack
) -> None:
    """Consumer and dead-letter producer reached the broker only through SASL_SSL; PostgreSQL
    and Redis answered only to their passwords."""
    assert secured_run.exit_code == 0, secured_run.output[-3000:]
    assert secured_run.saved == secured_run.sent_good
    letters = read_dead_letters(stack.kafka_bootstrap, secured_run.dlq_topic)
    assert [letter.value for letter in letters] == [b"not json"]
    assert "sasl.username" in secured_run.output  # librdkafka printed its configuration
    cache_errors = [
        line
        for line in secured_run.metrics.splitlines()
        if line.startswith("consumer_cache_requests_total") and 'result="error"' in line
    ]
    assert all(line.endswith(" 0.0") for line in cache_errors), cache_errors
    assert any(
        line.startswith("consumer_cache_requests_total") and not line.endswith(" 0.0")
        for line in secured_run.metrics.splitlines()
    )


def test_no_secret_in_logs_or_metrics(secured_run: SecuredRun) -> None:
    assert "starting:" in secured_run.output  # the line that names the URLs was written
    for name, secret in secured_run.secrets.items():
        assert secret not in secured_run.output, f"{name} in the worker's output"
        assert secret not in secured_run.metrics, f"{name} in /metrics"


def test_the_metrics_endpoint_listens_on_the_configured_address_only(
    secured_run: SecuredRun,
) -> None:
    """Scraped on 127.0.0.2 while the worker ran; the same port on 127.0.0.1 refused."""
    assert "consumer_messages_total" in secured_run.metrics
    assert f"metrics on http://{METRICS_HOST}:{secured_run.metrics_port}/" in secured_run.output
    assert secured_run.refused_elsewhere


@pytest.mark.parametrize(
    "case",
    [
        "postgres unreachable",
        "postgres password in the query",
        "postgres wrong password",
        "redis password in the query",
        "malformed kafka extra",
    ],
)
def test_failing_starts_do_not_echo_secrets(
    case: str, stack: FaultStack, password_role: PasswordRole, password_redis: PasswordRedis
) -> None:
    secret = f"s3cret-{secrets.token_hex(10)}"
    closed = free_port()
    env = {
        **_base_env(),
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "DATABASE_URL": password_role.url(),
        "REDIS_URL": password_redis.url,
        "CONSUMER_DATABASE_CONNECT_TIMEOUT": "2",
        "CONSUMER_DATABASE_CHECKOUT_TIMEOUT": "2",
    }
    expect_failure = True
    if case == "postgres unreachable":
        env["DATABASE_URL"] = f"postgresql://{password_role.name}:{secret}@{HOST}:{closed}/db"
    elif case == "postgres password in the query":
        env["DATABASE_URL"] = (
            f"postgresql://{password_role.name}@{HOST}:{closed}/db?password={secret}"
        )
    elif case == "postgres wrong password":
        env["DATABASE_URL"] = password_role.url(secret)
    elif case == "redis password in the query":
        # Redis is a cache: a wrong password costs cache errors, not the start.
        env["REDIS_URL"] = f"redis://{HOST}:{password_redis.port}/0?password={secret}"
        expect_failure = False
    else:
        env["CONSUMER_KAFKA_EXTRA"] = f"sasl.password={secret},no-equals-sign"
    topic = f"nothing-{uuid.uuid4().hex[:6]}"
    args = ["run", "--topic", topic, "--metrics-port", "0"]
    if not expect_failure:
        admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(timeout=30)
        args += ["--exit-when-idle", "1"]
    code, output = _run_consumer("--log-level", "DEBUG", *args, env=env)
    if expect_failure:
        assert code != 0, output
    if case == "malformed kafka extra":
        assert code == 2 and "kafka.extra" in output, output  # a configuration error
    assert secret not in output, f"{case}: the secret is in the output:\n{output[-2000:]}"
    code, output = _run_consumer("migrate", env=env)
    assert secret not in output, f"{case}: the secret is in migrate's output:\n{output[-2000:]}"


def test_kafka_settings_reach_the_replay_and_admin_clients(
    secured_run: SecuredRun, stack: FaultStack
) -> None:
    """`consumer dlq replay` (its consumer and producer) and an admin client, through SASL_SSL
    only; without the settings the listener refuses the same client."""
    refused = AdminClient({"bootstrap.servers": stack.sasl_bootstrap, "log_level": 0})
    with pytest.raises(Exception):  # noqa: B017, PT011 - any failure: the listener refused it
        refused.list_topics(timeout=5)

    kafka = stack.sasl_client_settings()
    env = {
        **_base_env(),
        "KAFKA_BOOTSTRAP_SERVERS": stack.sasl_bootstrap,
        "CONSUMER_KAFKA_EXTRA": _extra(kafka),
    }
    target = f"replayed-{uuid.uuid4().hex[:6]}"
    settings = load_settings(environ=env, config_file=os.devnull)
    create_topic(settings, target, partitions=1)  # the admin client, through SASL_SSL
    code, output = _run_consumer(
        "dlq", "replay", "--all", "--to", target, "--dlq-topic", secured_run.dlq_topic,
        "--group", secured_run.group, env=env,
    )  # fmt: skip
    assert code == 0, output
    assert "replayed 1" in output, output
    assert stack.sasl_password not in output
    assert end_offsets(stack.kafka_bootstrap, target, 1) == {0: 1}


# ---------------------------------------------------------------------------- PostgreSQL TLS


@dataclass
class TlsPostgres:
    stack: Stack
    certificates: Certificates
    folder: Path
    database: str
    cert_role: str


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsPostgres]:
    """A PostgreSQL of its own with TLS on, and a role that may log in only with a client
    certificate (`hostssl ... cert`)."""
    folder = private_folder("tls-postgres")
    certificates = Certificates.create(folder / "tls")
    stack = Stack(cache=folder, pg_port=free_port(), quiet=True)
    try:
        stack.up(["postgres"])
        # Where the server's user can read them (it may not enter the checkout).
        server_files = stack.pg_folder / "server-tls"
        server_files.mkdir()
        shutil.copy(certificates.server_cert, server_files / "server.pem")
        shutil.copy(certificates.server_key, server_files / "server.key")
        shutil.copy(certificates.ca, server_files / "ca.pem")
        owner = Stack.pg_owner()
        for path in (server_files, *server_files.iterdir()):
            if owner is not None:
                shutil.chown(path, owner, owner)
        (server_files / "server.key").chmod(0o600)
        cert_role = "cert_only"
        database = "consumer"
        with psycopg.connect(stack.database_server_url, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET ssl_cert_file = '{server_files / 'server.pem'}'")
            conn.execute(f"ALTER SYSTEM SET ssl_key_file = '{server_files / 'server.key'}'")
            conn.execute(f"ALTER SYSTEM SET ssl_ca_file = '{server_files / 'ca.pem'}'")
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute(f"CREATE ROLE {cert_role} LOGIN SUPERUSER")
            hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
            hba.write_text(f"hostssl all {cert_role} {HOST}/32 cert\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        yield TlsPostgres(stack, certificates, folder, database, cert_role)
    finally:
        stack.remove()


def _migrate_with(env: dict[str, str]) -> tuple[int, str]:
    return _run_consumer("migrate", env={**_base_env(), **env}, timeout=60)


def test_postgres_tls_settings_reach_libpq(tls_postgres: TlsPostgres) -> None:
    stack, certificates = tls_postgres.stack, tls_postgres.certificates
    url = f"postgresql://postgres@{HOST}:{stack.pg_port}/{tls_postgres.database}"
    verify = {"DATABASE_URL": url, "CONSUMER_DATABASE_SSLMODE": "verify-full"}

    code, output = _migrate_with({**verify, "CONSUMER_DATABASE_SSLROOTCERT": str(certificates.ca)})
    assert code == 0, output

    other = Certificates.create(tls_postgres.folder / "other-ca")
    code, output = _migrate_with({**verify, "CONSUMER_DATABASE_SSLROOTCERT": str(other.ca)})
    assert code != 0
    assert "certificate verify failed" in output, output

    # The client certificate is the only way in for this role.
    client_folder = tls_postgres.folder / "client"
    client_folder.mkdir()
    cert, key = certificates.client(client_folder, tls_postgres.cert_role)
    as_cert_role = {
        **verify,
        "DATABASE_URL": url.replace("//postgres@", f"//{tls_postgres.cert_role}@"),
        "CONSUMER_DATABASE_SSLROOTCERT": str(certificates.ca),
    }
    code, output = _migrate_with(as_cert_role)
    assert code != 0, "the role logged in without a certificate"
    code, output = _migrate_with(
        {
            **as_cert_role,
            "CONSUMER_DATABASE_SSLCERT": str(cert),
            "CONSUMER_DATABASE_SSLKEY": str(key),
        }
    )
    assert code == 0, output


def test_the_worker_pool_uses_tls_when_told_to(tls_postgres: TlsPostgres) -> None:
    """The worker's own pool (not only `migrate`) connects with the TLS settings."""
    stack, certificates = tls_postgres.stack, tls_postgres.certificates
    from consumer.storage.pool import create_pool

    settings = load_settings(
        environ={
            "DATABASE_URL": f"postgresql://postgres@{HOST}:{stack.pg_port}/{tls_postgres.database}",
            "CONSUMER_DATABASE_SSLMODE": "verify-full",
            "CONSUMER_DATABASE_SSLROOTCERT": str(certificates.ca),
        },
        config_file=os.devnull,
    )
    pool = create_pool(settings.database)
    try:
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
    finally:
        pool.close()
    assert row is not None and row[0] is True, row
    assert str(row[1]).startswith("TLS")
