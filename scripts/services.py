"""Install and start the services the worker talks to, on loopback, without Docker.

    python scripts/services.py up      # Kafka (KRaft), PostgreSQL 14 or newer, Redis; idempotent
    python scripts/services.py down    # stop what `up` started (never a service it reused)
    python scripts/services.py status
    python scripts/services.py clean   # stop, then remove every file `up` wrote

Every service is reused when something already answers on its port. Otherwise it is installed
when missing (Kafka from Maven Central into the cache folder, Redis and PostgreSQL from the
system's packages), started with its data and log under the cache folder, and waited for until it
answers: a Kafka metadata request, a PostgreSQL connection, a Redis `PING`. A service that will not
start fails the command with a message naming the service and its log file.

The cache folder is `.cache/` at the repository root (git ignores it), or `$CONSUMER_CACHE_DIR`.
PostgreSQL refuses to run as root, so under root it runs as the `postgres` system user, which
may not be able to enter the checkout (a root user's home, a `mktemp -d` folder): its files then
live in that user's home, in `~postgres/sentry-generic-consumer/<checkout>-<hash>/`, and
`.cache/postgres` links there. Under any other user they stay in `.cache/postgres/`.

`Stack` is also what the fault-injection suite uses to run a private set of services on other
ports, which it can stop, kill and restart without touching the shared ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import pwd
import re
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
HOST = "127.0.0.1"
# Where PostgreSQL's server programs are looked for, newest major first: $PG_BIN, Debian and
# Ubuntu, the PGDG packages of Red Hat's family, then whatever `pg_config` or PATH points at.
PG_BIN_PATTERNS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
PG_OLDEST_MAJOR = 14
JAVA_OLDEST_MAJOR = 17
PG_FOLDER = "sentry-generic-consumer"  # under ~postgres, when the server runs as that user
DATABASE = "consumer"
START_TIMEOUT = float(os.environ.get("SERVICES_START_TIMEOUT", "90"))
SERVICE_NAMES = ("kafka", "postgres", "redis")


class ServiceError(Exception):
    """A service could not be installed or started; the message says which and where to look."""


def _pg_major(bindir: Path) -> int | None:
    """The major version of the server in `bindir`, or None when there is none that runs."""
    postgres = bindir / "postgres"
    if not (postgres.is_file() and (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()):
        return None
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(found.group(1)) if found else None


def pg_candidates() -> list[Path]:
    """Folders that may hold PostgreSQL's server programs, in the order they are preferred."""
    if os.environ.get("PG_BIN"):
        return [Path(os.environ["PG_BIN"])]
    found: list[Path] = []
    for pattern in PG_BIN_PATTERNS:
        found.extend(Path(path) for path in Path("/").glob(pattern.lstrip("/")))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            found.append(Path(bindir))
    for program in ("pg_ctl", "initdb", "postgres"):
        path = shutil.which(program)
        if path is not None:
            found.append(Path(path).resolve().parent)
    return list(dict.fromkeys(found))


def find_pg_bin() -> tuple[Path, int] | None:
    """The newest PostgreSQL server (14 or newer) on this machine: its programs' folder and
    major version."""
    usable = []
    for bindir in pg_candidates():
        major = _pg_major(bindir)
        if major is not None and major >= PG_OLDEST_MAJOR:
            usable.append((major, bindir))
    if not usable:
        return None
    major, bindir = max(usable)
    return bindir, major


def pg_install() -> tuple[Path, int]:
    """Install the system's PostgreSQL server and return it. A package that creates and starts a
    cluster of its own (Debian's `main`) has it stopped, so it does not take the port."""
    found = find_pg_bin()
    if found is not None:
        return found
    if os.environ.get("PG_BIN"):
        raise ServiceError(f"postgres: PG_BIN={os.environ['PG_BIN']} holds no PostgreSQL server")
    if shutil.which("apt-get") is None:
        raise ServiceError(
            f"postgres: no PostgreSQL server {PG_OLDEST_MAJOR} or newer found and no apt-get to "
            "install one; install the server package of your system, or set PG_BIN to the "
            "folder holding its initdb, pg_ctl and postgres"
        )
    apt_install("postgresql")
    if shutil.which("pg_lsclusters") is not None:
        listed = subprocess.run(
            ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
        ).stdout
        for line in listed.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[3] == "online":
                subprocess.run(["pg_ctlcluster", fields[0], fields[1], "stop"], check=False)
                say(f"postgres: stopped the cluster {fields[0]}/{fields[1]} the package started")
    found = find_pg_bin()
    if found is None:
        raise ServiceError("postgres: installed the postgresql package but found no server")
    return found


def say(message: str) -> None:
    print(f"services: {message}", flush=True)


def run(cmd: Sequence[str], *, user: str | None = None, log: Path | None = None) -> None:
    """Run a command to completion; on failure raise with its output (or its log file)."""
    argv = list(cmd)
    if user is not None and os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    # Another user may not be able to enter the current folder (a 0700 checkout).
    cwd = "/" if argv[0] == "runuser" else None
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
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


def java_check() -> None:
    """Kafka's broker needs Java 17 or newer: install the system's default runtime when there is
    no `java`, refuse an older one with the reason."""
    if shutil.which("java") is None:
        apt_install("default-jre-headless")
    result = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    major = 0 if found is None else int(found.group(1))
    if major == 1 and found is not None and found.group(2):  # "1.8.0_392" is Java 8
        major = int(found.group(2))
    if major < JAVA_OLDEST_MAJOR:
        raise ServiceError(
            f"kafka: Java {JAVA_OLDEST_MAJOR} or newer is needed, `java -version` says "
            f"{(result.stderr or result.stdout).strip().splitlines()[:1]}"
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (killed, not yet reaped) still answers kill(0): reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _children(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Stack:
    """One set of services: where their files live and which loopback ports they use."""

    cache: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    pg_port: int = 5432
    redis_port: int = 6379
    kafka_libs: Path | None = None  # share the resolved jars of another stack
    quiet: bool = False
    start_timeout: float = START_TIMEOUT

    # ------------------------------------------------------------------------------- paths

    @property
    def run_dir(self) -> Path:
        return self.cache / "run"

    @property
    def libs(self) -> Path:
        return self.kafka_libs or self.cache / "kafka" / "libs"

    def log(self, name: str) -> Path:
        return {
            "kafka": self.cache / "kafka" / "kafka.log",
            "postgres": self.pg_folder / "postgres.log",
            "redis": self.cache / "redis" / "redis.log",
        }[name]

    def port(self, name: str) -> int:
        return {"kafka": self.kafka_port, "postgres": self.pg_port, "redis": self.redis_port}[name]

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def database_server_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.pg_port}/postgres"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.pg_port}/{DATABASE}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def _say(self, message: str) -> None:
        if not self.quiet:
            say(message)

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _read_pid(self, name: str) -> int | None:
        try:
            return int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None

    # ----------------------------------------------------------------------------- control

    def ready(self, name: str) -> bool:
        return {"kafka": self.kafka_ready, "postgres": self.pg_ready, "redis": self.redis_ready}[
            name
        ]()

    def start(self, name: str) -> None:
        {"kafka": self.kafka_start, "postgres": self.pg_start, "redis": self.redis_start}[name]()

    def stop(self, name: str) -> None:
        {"kafka": self.kafka_stop, "postgres": self.pg_stop, "redis": self.redis_stop}[name]()

    def kill(self, name: str) -> None:
        """SIGKILL a service this stack started (a crash, not a shutdown)."""
        if name == "postgres":
            # The postmaster and every backend at once, as a machine crash would; the next start
            # runs crash recovery.
            postmaster = int((self.pg_data / "postmaster.pid").read_text().splitlines()[0])
            victims = [postmaster, *_children(postmaster)]
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while any(pid_alive(victim) for victim in victims) and time.monotonic() < deadline:
                time.sleep(0.1)
            (self.run_dir / "postgres.started").unlink(missing_ok=True)
            return
        pid = self._read_pid(name)
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self._pid_file(name).unlink(missing_ok=True)

    def wait_ready(self, name: str, alive: Callable[[], bool] = lambda: True) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.ready(name):
                return
            if not alive():
                break
            time.sleep(0.5)
        log = self.log(name)
        raise ServiceError(
            f"{name} did not answer on {HOST}:{self.port(name)} within {self.start_timeout:.0f}s; "
            f"see its log: {log}\n{tail(log)}"
        )

    def up(self, names: Sequence[str] = SERVICE_NAMES) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            started = time.monotonic()
            port = self.port(name)
            if self.ready(name):
                self._say(f"{name} already answering on {HOST}:{port}, reusing it")
            elif port_open(port):
                # Something holds the port but does not answer yet (a broker still starting).
                self.wait_ready(name)
                self._say(f"{name} answering on {HOST}:{port}, reusing it")
            else:
                self.start(name)
                elapsed = time.monotonic() - started
                self._say(
                    f"{name} started on {HOST}:{port} in {elapsed:.1f}s (log: {self.log(name)})"
                )
            if name == "postgres":
                self.pg_ensure_database()

    def down(self, names: Sequence[str] = SERVICE_NAMES) -> None:
        for name in reversed(names):
            self.stop(name)

    def status(self, names: Sequence[str] = SERVICE_NAMES) -> None:
        for name in names:
            state = "answering" if self.ready(name) else "down"
            say(f"{name:9} {HOST}:{self.port(name)} {state} (log: {self.log(name)})")

    def _stop_pid(self, name: str, timeout: float) -> None:
        pid = self._read_pid(name)
        if pid is None:
            return
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            self._say(f"{name} stopped")
        self._pid_file(name).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------- Kafka

    def kafka_properties(self) -> str:
        data = self.cache / "kafka" / "data"
        return f"""\
# Written by scripts/services.py: one combined broker and controller in KRaft mode, for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{self.controller_port}
listeners=PLAINTEXT://{HOST}:{self.kafka_port},CONTROLLER://{HOST}:{self.controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{self.kafka_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
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

    def kafka_install(self) -> None:
        java_check()
        if any(self.libs.glob("kafka_2.13-*.jar")):
            return
        if shutil.which("mvn") is None:
            apt_install("maven")
        self._say("resolving Apache Kafka and its runtime dependencies with Maven (first run only)")
        self.libs.mkdir(parents=True, exist_ok=True)
        run(
            [
                "mvn", "-q", "-B", "-f", str(ROOT / "scripts" / "kafka" / "pom.xml"),
                "dependency:copy-dependencies", f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime",
            ]
        )  # fmt: skip
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise ServiceError(f"kafka: Maven finished but no kafka_2.13 jar is in {self.libs}")

    def kafka_start(self) -> None:
        self.kafka_install()
        folder = self.cache / "kafka"
        folder.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        properties = folder / "server.properties"
        properties.write_text(self.kafka_properties())
        java = ["java", "-cp", f"{self.libs}/*"]
        if not (folder / "data" / "meta.properties").exists():
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
                log=self.log("kafka"),
            )
        heap = os.environ.get("KAFKA_HEAP", "-Xms256m -Xmx768m").split()
        with self.log("kafka").open("ab") as log:
            process = subprocess.Popen(
                [
                    "java", *heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                    "-Dorg.slf4j.simpleLogger.showDateTime=true",
                    "-cp", f"{self.libs}/*", "kafka.Kafka", str(properties),
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self._pid_file("kafka").write_text(str(process.pid))
        self.wait_ready("kafka", lambda: process.poll() is None)

    def kafka_ready(self) -> bool:
        if not port_open(self.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.kafka_bootstrap, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=3)
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        return bool(metadata.brokers)

    def kafka_stop(self) -> None:
        self._stop_pid("kafka", timeout=60)

    # -------------------------------------------------------------------------- PostgreSQL

    @staticmethod
    def pg_owner() -> str | None:
        """Who runs the server: PostgreSQL refuses root, so root hands it to `postgres`."""
        return "postgres" if os.geteuid() == 0 else None

    @property
    def pg_folder(self) -> Path:
        """Where the server's data, sockets and log live: a folder its user can enter."""
        owner = self.pg_owner()
        if owner is None:
            return self.cache / "postgres"
        digest = hashlib.sha256(str(self.cache).encode()).hexdigest()[:10]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{self.cache.parent.name}-{self.cache.name}")
        return Path(pwd.getpwnam(owner).pw_dir) / PG_FOLDER / f"{name.strip('-')}-{digest}"

    @property
    def pg_data(self) -> Path:
        """The data directory of the running server (the one `up` started), else of the newest
        PostgreSQL here."""
        started = self.run_dir / "postgres.started"
        with contextlib.suppress(OSError):
            return Path(started.read_text().strip())
        found = find_pg_bin()
        major = found[1] if found else 0
        return self.pg_folder / str(major) / "data"

    def _pg_prepare_folder(self) -> Path:
        """Make the server's folder, owned by the server's user; under root, link it from the
        cache folder so that people find it where the other services' files are."""
        folder = self.pg_folder
        owner = self.pg_owner()
        if owner is None:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        parent = folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._pg_prune(parent)
        for path in (parent, folder):
            path.mkdir(exist_ok=True)
            shutil.chown(path, owner, owner)
            path.chmod(0o700)
        (folder / "CHECKOUT").write_text(f"{self.cache}\n")
        link = self.cache / "postgres"
        if link.is_symlink() and link.resolve() != folder:
            link.unlink()
        if not link.exists() and not link.is_symlink():
            self.cache.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder, target_is_directory=True)
        return folder

    def _pg_prune(self, parent: Path) -> None:
        """Remove the folders of checkouts that are gone (a deleted `mktemp -d` clone) and whose
        server is not running."""
        for folder in parent.iterdir():
            try:
                checkout = Path((folder / "CHECKOUT").read_text().strip())
            except OSError:
                continue
            running = any(folder.glob("*/data/postmaster.pid"))
            if not checkout.exists() and not running:
                shutil.rmtree(folder, ignore_errors=True)
                self._say(f"postgres: removed {folder}, left by {checkout}, which is gone")

    def pg_start(self) -> None:
        bindir, major = pg_install()
        owner = self.pg_owner()
        folder = self._pg_prepare_folder()
        data, sockets, log = folder / str(major) / "data", folder / "run", self.log("postgres")
        for path in (data.parent, sockets):
            path.mkdir(parents=True, exist_ok=True)
            if owner is not None:
                shutil.chown(path, owner, owner)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log.touch()
        if owner is not None:
            shutil.chown(log, owner, owner)
        if not (data / "PG_VERSION").exists():
            run(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C.UTF-8"],
                user=owner, log=log,
            )  # fmt: skip
        options = (
            f"-c listen_addresses={HOST} -c port={self.pg_port} -c unix_socket_directories={sockets} "
            "-c max_connections=300 -c shared_buffers=256MB -c timezone=UTC "
            "-c max_wal_size=2GB -c checkpoint_timeout=15min"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                  "-t", "60"]  # fmt: skip
        run([*pg_ctl, "start"], user=owner, log=log)
        (self.run_dir / "postgres.started").write_text(str(data))
        self.wait_ready("postgres")

    def pg_ready(self) -> bool:
        if not port_open(self.pg_port):
            return False
        import psycopg

        try:
            psycopg.connect(self.database_server_url, connect_timeout=3).close()
        except psycopg.Error:
            return False
        return True

    def pg_ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.database_server_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
                self._say(f"postgres: created database {DATABASE}")

    def pg_stop(self) -> None:
        marker = self.run_dir / "postgres.started"
        if not marker.exists():
            return
        data = Path(marker.read_text().strip())
        if (data / "postmaster.pid").exists():
            found = find_pg_bin()
            pg_ctl = str(found[0] / "pg_ctl") if found else "pg_ctl"
            run(
                [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                user=self.pg_owner(),
                log=self.log("postgres"),
            )
            self._say("postgres stopped")
        marker.unlink()

    def remove(self) -> None:
        """Stop what this stack started, then remove its files: the cache folder and, where it
        lives elsewhere, PostgreSQL's folder."""
        self.down()
        if self.pg_owner() is not None:
            shutil.rmtree(self.pg_folder, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)

    # ------------------------------------------------------------------------------- Redis

    def redis_start(self) -> None:
        if shutil.which("redis-server") is None:
            apt_install("redis-server")
            if self.redis_ready():  # the package's own service came up on this port: reuse it
                return
        folder = self.cache / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log("redis").open("ab") as log:
            process = subprocess.Popen(
                ["redis-server", "--bind", HOST, "--port", str(self.redis_port), "--dir", str(folder),
                 "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self._pid_file("redis").write_text(str(process.pid))
        self.wait_ready("redis", lambda: process.poll() is None)

    def redis_ready(self) -> bool:
        if not port_open(self.redis_port):
            return False
        import redis

        try:
            return bool(redis.Redis(host=HOST, port=self.redis_port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def redis_stop(self) -> None:
        self._stop_pid("redis", timeout=20)


def default_stack() -> Stack:
    return Stack(cache=Path(os.environ.get("CONSUMER_CACHE_DIR", ROOT / ".cache")).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "status", "clean"])
    parser.add_argument(
        "services", nargs="*", help=f"any of {', '.join(SERVICE_NAMES)} (default: all)"
    )
    defaults = Stack(cache=ROOT)
    for option in ("kafka_port", "controller_port", "pg_port", "redis_port"):
        parser.add_argument(
            f"--{option.replace('_', '-')}",
            type=int,
            default=getattr(defaults, option),
            help="default: %(default)s",
        )
    parser.add_argument(
        "--kafka-libs", type=Path, help="Kafka's jars already resolved elsewhere (skips Maven)"
    )
    args = parser.parse_args(argv)
    names = args.services or list(SERVICE_NAMES)
    unknown = sorted(set(names) - set(SERVICE_NAMES))
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}")
    stack = dataclasses.replace(
        default_stack(),
        kafka_port=args.kafka_port,
        controller_port=args.controller_port,
        pg_port=args.pg_port,
        redis_port=args.redis_port,
        kafka_libs=args.kafka_libs,
    )
    try:
        if args.action == "clean":
            stack.remove()
        else:
            {"up": stack.up, "down": stack.down, "status": stack.status}[args.action](names)
    except ServiceError as error:
        print(f"services: ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
