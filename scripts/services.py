"""Install and start the services the worker talks to, on loopback, without Docker.

    python scripts/services.py up      # Kafka (KRaft), PostgreSQL 15, Redis; idempotent
    python scripts/services.py down    # stop what `up` started (never a service it reused)
    python scripts/services.py status

Every service is reused when something already answers on its port. Otherwise it is installed
when missing (Kafka from Maven Central into the cache folder, Redis and PostgreSQL from Debian's
packages), started with its data and log under the cache folder, and waited for until it
answers: a Kafka metadata request, `pg_isready`, a Redis `PING`. A service that will not start
fails the command with a message naming the service and its log file.

The cache folder is `.cache/` at the repository root (git ignores it), or `$CONSUMER_CACHE_DIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CONSUMER_CACHE_DIR", ROOT / ".cache")).resolve()
RUN = CACHE / "run"
HOST = "127.0.0.1"
KAFKA_PORT, KAFKA_CONTROLLER_PORT, PG_PORT, REDIS_PORT = 9092, 9093, 5432, 6379
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "consumer"
START_TIMEOUT = float(os.environ.get("SERVICES_START_TIMEOUT", "90"))


class ServiceError(Exception):
    """A service could not be installed or started; the message says which and where to look."""


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    log: Path
    start: Callable[[], None]
    ready: Callable[[], bool]
    stop: Callable[[], None]


def say(message: str) -> None:
    print(f"services: {message}", flush=True)


def run(cmd: Sequence[str], *, user: str | None = None, log: Path | None = None) -> None:
    """Run a command to completion; on failure raise with its output (or its log file)."""
    argv = list(cmd)
    if user is not None and os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip()[-2000:]
        where = f" (log: {log})" if log else ""
        raise ServiceError(
            f"`{' '.join(cmd)}` failed with exit code {result.returncode}{where}\n{detail}"
        )


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def wait_until(service: Service, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if service.ready():
            return
        if not alive():
            break
        time.sleep(0.5)
    raise ServiceError(
        f"{service.name} did not answer on {HOST}:{service.port} within {START_TIMEOUT:.0f}s; "
        f"see its log: {service.log}\n{tail(service.log)}"
    )


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(
            f"{', '.join(packages)} missing; install it (apt-get install {' '.join(packages)})"
        )
    say(f"installing {' '.join(packages)} from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = subprocess.run(
        ["apt-get", "update", "-qq"], capture_output=True, text=True, env=env, check=False
    )
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"apt-get install {' '.join(packages)} failed:\n{update.stderr}{result.stderr[-2000:]}"
        )


def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(name: str) -> int | None:
    try:
        return int(pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- Kafka

KAFKA_DIR = CACHE / "kafka"
KAFKA_LIBS = KAFKA_DIR / "libs"
KAFKA_DATA = KAFKA_DIR / "data"
KAFKA_LOG = KAFKA_DIR / "kafka.log"
KAFKA_PROPERTIES = f"""\
# Written by scripts/services.py: one combined broker and controller in KRaft mode, for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://{HOST}:{KAFKA_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={KAFKA_DATA}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
message.max.bytes=10485760
log.retention.hours=24
log.segment.bytes=134217728
"""


def java_classpath() -> str:
    return f"{KAFKA_LIBS}/*"


def kafka_install() -> None:
    if any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        return
    if shutil.which("java") is None:
        apt_install("openjdk-17-jre-headless")
    if shutil.which("mvn") is None:
        apt_install("maven")
    say("resolving Apache Kafka and its runtime dependencies with Maven (first run only)")
    KAFKA_LIBS.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(ROOT / "scripts" / "kafka" / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={KAFKA_LIBS}",
            "-DincludeScope=runtime",
        ]
    )
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"kafka: Maven finished but no kafka_2.13 jar is in {KAFKA_LIBS}")


def kafka_start() -> None:
    kafka_install()
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    properties = KAFKA_DIR / "server.properties"
    properties.write_text(KAFKA_PROPERTIES)
    java = ["java", "-cp", java_classpath()]
    if not (KAFKA_DATA / "meta.properties").exists():
        uuid = (
            subprocess.run(
                [*java, "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        run(
            [*java, "kafka.tools.StorageTool", "format", "-t", uuid, "-c", str(properties)],
            log=KAFKA_LOG,
        )
    heap = os.environ.get("KAFKA_HEAP", "-Xms256m -Xmx768m").split()
    with KAFKA_LOG.open("ab") as log:
        process = subprocess.Popen(
            [
                "java",
                *heap,
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp",
                java_classpath(),
                "kafka.Kafka",
                str(properties),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file("kafka").write_text(str(process.pid))
    wait_until(SERVICES["kafka"], lambda: process.poll() is None)


def kafka_ready() -> bool:
    if not port_open(KAFKA_PORT):
        return False
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"{HOST}:{KAFKA_PORT}", "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=3)
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False
    return bool(metadata.brokers)


def kafka_stop() -> None:
    stop_pid("kafka", signal.SIGTERM, timeout=60)


# ----------------------------------------------------------------------------------- PostgreSQL

PG_DIR = CACHE / "postgres"
PG_DATA = PG_DIR / "data"
PG_SOCKETS = PG_DIR / "run"
PG_LOG = PG_DIR / "postgres.log"
PG_USER = "postgres"


def pg_owner() -> str | None:
    """Who runs the server: PostgreSQL refuses root, so root hands it to the `postgres` user."""
    return PG_USER if os.geteuid() == 0 else None


def pg_start() -> None:
    if not (PG_BIN / "postgres").exists():
        apt_install("postgresql-15")
    for folder in (PG_DIR, PG_SOCKETS):
        folder.mkdir(parents=True, exist_ok=True)
    owner = pg_owner()
    if owner is not None:
        shutil.chown(PG_DIR, owner)
        shutil.chown(PG_SOCKETS, owner)
        PG_LOG.touch()
        shutil.chown(PG_LOG, owner)
    if not (PG_DATA / "PG_VERSION").exists():
        run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(PG_DATA),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            user=owner,
            log=PG_LOG,
        )
    options = (
        f"-c listen_addresses={HOST} -c port={PG_PORT} -c unix_socket_directories={PG_SOCKETS} "
        "-c max_connections=300 -c shared_buffers=256MB -c timezone=UTC "
        "-c max_wal_size=2GB -c checkpoint_timeout=15min"
    )
    run(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(PG_DATA),
            "-l",
            str(PG_LOG),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        user=owner,
        log=PG_LOG,
    )
    (RUN / "postgres.started").write_text(str(PG_DATA))
    wait_until(SERVICES["postgres"], lambda: True)


def pg_ready() -> bool:
    if not port_open(PG_PORT):
        return False
    isready = PG_BIN / "pg_isready"
    command = str(isready) if isready.exists() else "pg_isready"
    result = subprocess.run([command, "-h", HOST, "-p", str(PG_PORT), "-q"], check=False)
    return result.returncode == 0


def pg_ensure_database() -> None:
    import psycopg

    with psycopg.connect(
        f"postgresql://postgres@{HOST}:{PG_PORT}/postgres", autocommit=True
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
            say(f"postgres: created database {DATABASE}")


def pg_stop() -> None:
    marker = RUN / "postgres.started"
    if not marker.exists():
        return
    if (PG_DATA / "postmaster.pid").exists():
        run(
            [str(PG_BIN / "pg_ctl"), "-D", str(PG_DATA), "-m", "fast", "-w", "stop"],
            user=pg_owner(),
            log=PG_LOG,
        )
        say("postgres stopped")
    marker.unlink()


# ---------------------------------------------------------------------------------------- Redis

REDIS_DIR = CACHE / "redis"
REDIS_LOG = REDIS_DIR / "redis.log"


def redis_start() -> None:
    if shutil.which("redis-server") is None:
        apt_install("redis-server")
        if redis_ready():  # the package's own service came up on the standard port: reuse it
            return
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    with REDIS_LOG.open("ab") as log:
        process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                HOST,
                "--port",
                str(REDIS_PORT),
                "--dir",
                str(REDIS_DIR),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file("redis").write_text(str(process.pid))
    wait_until(SERVICES["redis"], lambda: process.poll() is None)


def redis_ready() -> bool:
    if not port_open(REDIS_PORT):
        return False
    import redis

    try:
        return bool(redis.Redis(host=HOST, port=REDIS_PORT, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_stop() -> None:
    stop_pid("redis", signal.SIGTERM, timeout=20)


# --------------------------------------------------------------------------------------- common


def stop_pid(name: str, sig: signal.Signals, timeout: float) -> None:
    pid = read_pid(name)
    if pid is None:
        return
    if pid_alive(pid):
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            # Reap it if it is our child (it is not when an earlier `up` started it).
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        say(f"{name} stopped")
    pid_file(name).unlink(missing_ok=True)


SERVICES: dict[str, Service] = {
    "kafka": Service("kafka", KAFKA_PORT, KAFKA_LOG, kafka_start, kafka_ready, kafka_stop),
    "postgres": Service("postgres", PG_PORT, PG_LOG, pg_start, pg_ready, pg_stop),
    "redis": Service("redis", REDIS_PORT, REDIS_LOG, redis_start, redis_ready, redis_stop),
}


def up(names: Sequence[str]) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    for name in names:
        service = SERVICES[name]
        started = time.monotonic()
        if service.ready():
            say(f"{name} already answering on {HOST}:{service.port}, reusing it")
        elif port_open(service.port):
            # Something holds the port but does not answer yet (a broker still starting): wait.
            wait_until(service, lambda: True)
            say(f"{name} answering on {HOST}:{service.port}, reusing it")
        else:
            service.start()
            say(
                f"{name} started on {HOST}:{service.port} in {time.monotonic() - started:.1f}s (log: {service.log})"
            )
        if name == "postgres":
            pg_ensure_database()


def down(names: Sequence[str]) -> None:
    for name in reversed(names):
        SERVICES[name].stop()


def status(names: Sequence[str]) -> None:
    for name in names:
        service = SERVICES[name]
        state = "answering" if service.ready() else "down"
        say(f"{name:9} {HOST}:{service.port} {state} (log: {service.log})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    names = args.services or list(SERVICES)
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}")
    try:
        {"up": up, "down": down, "status": status}[args.action](names)
    except ServiceError as error:
        print(f"services: ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
