"""The private services of the fault suite: Kafka, PostgreSQL and Redis on free ports, in a
folder of their own under `.cache/private/`, which the suite may kill, stop and restart without
touching the shared services of `make services`.

The broker has a second listener, SASL_SSL with the PLAIN mechanism, for the security tests:
clients reach it only with the right `security.protocol`, `sasl.*` and `ssl.ca.location`
settings, so a worker consuming through it proves those settings reach every Kafka client.
PostgreSQL gets the same certificate authority for its TLS tests (`tls.py`).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from scripts.services import HOST, ROOT, Stack
from tests.integration.helpers import free_port


def _openssl(*args: str) -> None:
    command = shutil.which("openssl")
    assert command is not None, "the TLS tests need the openssl command"
    subprocess.run([command, *args], check=True, capture_output=True)


def private_folder(prefix: str) -> Path:
    """A fresh folder under `.cache/private/`, beside the shared services' files."""
    path = ROOT / ".cache" / "private" / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


@dataclass(frozen=True)
class Certificates:
    """A throw-away certificate authority and a server certificate for 127.0.0.1."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    keystore: Path  # PKCS#12 of the server key and certificate, for the broker
    keystore_password: str

    @classmethod
    def create(cls, folder: Path) -> Certificates:
        folder.mkdir(parents=True, exist_ok=True)
        password = secrets.token_hex(8)

        ca, ca_key = folder / "ca.pem", folder / "ca.key"
        cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=fault suite CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={HOST}",
                "-keyout", str(key), "-out", str(csr))  # fmt: skip
        extensions = folder / "san.cnf"
        extensions.write_text(f"subjectAltName=IP:{HOST},DNS:localhost\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                "-CAcreateserial", "-days", "2", "-extfile", str(extensions),
                "-out", str(cert))  # fmt: skip
        keystore = folder / "server.p12"
        _openssl("pkcs12", "-export", "-in", str(cert), "-inkey", str(key),
                "-out", str(keystore), "-passout", f"pass:{password}")  # fmt: skip
        for path in folder.iterdir():
            path.chmod(0o644)
        return cls(folder, ca, cert, key, keystore, password)

    def client(self, folder: Path, common_name: str, ca: Path | None = None) -> tuple[Path, Path]:
        """A client certificate and key for `common_name`, signed by this authority (or by
        another one's key pair given as `ca`, whose key sits beside it)."""
        authority = ca or self.ca
        authority_key = authority.with_suffix(".key")
        cert, key, csr = (
            folder / f"{common_name}.pem",
            folder / f"{common_name}.key",
            folder / f"{common_name}.csr",
        )
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}",
                 "-keyout", str(key), "-out", str(csr))  # fmt: skip
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(authority),
                 "-CAkey", str(authority_key), "-CAcreateserial", "-days", "2",
                 "-out", str(cert))  # fmt: skip
        key.chmod(0o600)
        return cert, key


@dataclass
class FaultStack(Stack):
    """A `Stack` whose broker also listens with SASL_SSL on `sasl_port`."""

    sasl_port: int = 0
    sasl_user: str = "fault-suite"
    sasl_password: str = field(default_factory=lambda: f"sasl-{secrets.token_hex(12)}")
    certificates: Certificates | None = None

    @property
    def sasl_bootstrap(self) -> str:
        return f"{HOST}:{self.sasl_port}"

    def kafka_properties(self) -> str:
        text = super().kafka_properties()
        if not self.sasl_port or self.certificates is None:
            return text
        plain = f"PLAINTEXT://{HOST}:{self.kafka_port}"
        sasl = f"SASL_SSL://{HOST}:{self.sasl_port}"
        text = text.replace(f"listeners={plain},", f"listeners={plain},{sasl},", 1)
        text = text.replace(f"advertised.listeners={plain}", f"advertised.listeners={plain},{sasl}")
        text = text.replace(
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,",
        )
        certificates = self.certificates
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{self.sasl_user}="{self.sasl_password}";'
        )
        return text + (
            "sasl.enabled.mechanisms=PLAIN\n"
            f"listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}\n"
            "ssl.keystore.type=PKCS12\n"
            f"ssl.keystore.location={certificates.keystore}\n"
            f"ssl.keystore.password={certificates.keystore_password}\n"
            f"ssl.key.password={certificates.keystore_password}\n"
        )

    def sasl_client_settings(self) -> dict[str, str]:
        """librdkafka settings that reach the SASL_SSL listener."""
        assert self.certificates is not None
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.username": self.sasl_user,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": str(self.certificates.ca),
        }

    def create_database(self, name: str) -> str:
        """Create a database on the private server; return its URL."""
        with psycopg.connect(self.database_server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_server_url.rsplit("/", 1)[0] + f"/{name}"


def start_stack() -> tuple[FaultStack, Path]:
    """Start a private stack with TLS material; the caller stops it with `stop_stack`."""
    folder = private_folder("faults")
    certificates = Certificates.create(folder / "tls")
    stack = FaultStack(
        cache=folder,
        kafka_port=free_port(),
        controller_port=free_port(),
        pg_port=free_port(),
        redis_port=free_port(),
        sasl_port=free_port(),
        certificates=certificates,
        kafka_libs=ROOT / ".cache" / "kafka" / "libs",
        quiet=True,
    )
    try:
        stack.up()
        # Commit timestamps let the verdict date every nodestore write by its commit, the
        # moment it became durable (the `timestamp` column is taken before the statement).
        with psycopg.connect(stack.database_server_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        stack.stop("postgres")
        stack.start("postgres")
    except BaseException:
        stop_stack(stack, folder)
        raise
    return stack, folder


def stop_stack(stack: Stack, folder: Path) -> None:
    try:
        stack.remove()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
