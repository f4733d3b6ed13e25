"""A checkout in a folder no other user may enter (mode 0700: `mktemp -d`, a root user's home)
brings its own services up on private ports with `scripts/services.py` and runs `consumer demo`
end to end. PostgreSQL never runs as root, so under root its files must live where the
`postgres` user can reach them, and `clean` must remove them again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.services import ROOT, Stack
from tests.integration.helpers import free_port

pytestmark = pytest.mark.integration


def _copy_checkout(destination: Path) -> None:
    """The working tree as git sees it (tracked and new files, nothing ignored)."""
    git = shutil.which("git")
    assert git is not None
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    folder = Path(tempfile.mkdtemp(prefix="fresh-checkout-"))
    assert folder.stat().st_mode & 0o777 == 0o700
    checkout = folder / "checkout"
    _copy_checkout(checkout)
    yield checkout
    shutil.rmtree(folder, ignore_errors=True)


def _run(checkout: Path, *args: str, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{output[-4000:]}"
    return output


def test_a_private_checkout_brings_up_its_services_and_runs_the_demo(
    private_checkout: Path,
) -> None:
    ports = {
        "--kafka-port": free_port(),
        "--controller-port": free_port(),
        "--pg-port": free_port(),
        "--redis-port": free_port(),
    }
    options = [str(part) for pair in ports.items() for part in pair]
    libs = ROOT / ".cache" / "kafka" / "libs"
    if any(libs.glob("kafka_2.13-*.jar")):
        options += ["--kafka-libs", str(libs)]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONSUMER_", "KAFKA_", "DATABASE_", "REDIS_", "PG_"))
    }
    stack = Stack(cache=private_checkout / ".cache", pg_port=ports["--pg-port"])
    try:
        _run(private_checkout, "scripts/services.py", "up", *options, env=env, timeout=300)
        if os.geteuid() == 0:
            # Under root the server's files are outside the private folder, linked from it.
            link = private_checkout / ".cache" / "postgres"
            assert link.is_symlink()
            assert not link.resolve().is_relative_to(private_checkout.parent)
            assert stack.pg_folder == link.resolve()
        assert private_checkout.parent.stat().st_mode & 0o777 == 0o700

        imported = _run(
            private_checkout, "-c", "import consumer; print(consumer.__file__)", env=env, timeout=60
        )
        assert imported.strip().startswith(str(private_checkout))
        demo_env = {
            **env,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['--kafka-port']}",
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{ports['--pg-port']}/consumer",
            "REDIS_URL": f"redis://127.0.0.1:{ports['--redis-port']}/0",
            "CONSUMER_WORKER_METRICS_PORT": str(free_port()),
        }
        output = _run(
            private_checkout, "-m", "consumer", "demo", "--count", "300", env=demo_env, timeout=300
        )
        assert "demo: saved 300 events (0 dead-lettered)" in output, output[-4000:]
    finally:
        _run(private_checkout, "scripts/services.py", "clean", *options, env=env, timeout=120)
    assert not stack.pg_folder.exists()
    assert not (private_checkout / ".cache").exists()
