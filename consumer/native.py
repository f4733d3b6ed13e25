"""The pipeline's modules compiled with mypyc, used only where they were built from the very
sources beside them.

    consumer native build     # `make native`, which the make targets that run code depend on
    consumer native status

`build` compiles MODULES with mypyc (part of mypy) and a C compiler into `consumer/_native/`,
outside the source files, with a manifest: a hash of every `.py` file of the package (compiled
code keeps what it knew of the modules it calls, so an edit anywhere makes it stale) and the
interpreter it was built for. At the import of `consumer`, `install()` checks that manifest
against the sources as they are now; only if it matches does it put a finder in front of the
import system that loads the compiled modules. Otherwise (no build, an edited source, another
interpreter, `CONSUMER_NATIVE=off`) the same modules run as pure Python, which behaves the
same: the unit tests of the pipeline run in both forms. A stale build is said once, as a
warning; it is never loaded.

Why: the save steps are plain Python over dicts and lists, and compiled they cost about a fifth
less CPU per event (README, "Performance"). Nothing else changes: mypyc compiles the same
annotated code that mypy --strict checks, and enforces those annotations at run time, where
the interpreter would not.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR / "_native"
MANIFEST = "manifest.json"
GROUP = "consumer_native"  # the shared library mypyc builds beside the modules' own
ENV = "CONSUMER_NATIVE"  # "off" runs the pure-Python modules even where a build exists

# The pipeline's pure steps and what they call per event (not the I/O or the process plumbing).
MODULES = tuple(
    f"consumer.pipeline.{name}"
    for name in (
        "contexts",
        "culprit",
        "environments",
        "event_metrics",
        "interface_tags",
        "interfaces",
        "job",
        "message",
        "metadata",
        "plugins",
        "releases",
        "tags",
        "toplevel",
        "user_agent",
        "users",
    )
)

# What install() decided for this process: "compiled", "off", "absent" or "stale: <why>".
status = "absent"


def sources_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over every .py file of the package, names and contents, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def interpreter() -> str:
    """The interpreter a build is for: the extension modules' ABI tag and the exact version."""
    return f"{sys.implementation.cache_tag} {sys.version.split()[0]}"


def check(build_dir: Path, package_dir: Path = PACKAGE_DIR) -> dict[str, Path] | str:
    """The compiled file of each module (plus the group's library) if the build in `build_dir`
    was made from the sources in `package_dir` by this interpreter, else why not."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_bytes())
    except FileNotFoundError:
        return "absent"
    except ValueError as error:
        return f"stale: unreadable manifest ({error})"
    if manifest.get("interpreter") != interpreter():
        return f"stale: built for {manifest.get('interpreter')}, running {interpreter()}"
    if manifest.get("sources") != sources_hash(package_dir):
        return "stale: the package's sources changed since the build (make native)"
    files = {name: build_dir / file for name, file in manifest["files"].items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        return f"stale: missing {', '.join(missing)}"
    return files


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules (by their full names) in the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)


def install(build_dir: Path = BUILD_DIR) -> str:
    """Decide once per process, before any pipeline module is imported; returns the status."""
    global status
    if status == "compiled":  # installed already
        return status
    if os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no"):
        status = "off"
        return status
    found = check(build_dir)
    if isinstance(found, str):
        status = found
        if found != "absent":
            logger.warning("compiled pipeline modules not used, %s", found)
        return status
    loaded = [name for name in MODULES if name in sys.modules]
    if loaded:  # too late to swap them: keep one form throughout
        status = f"stale: already imported as Python: {', '.join(loaded)}"
        logger.warning("compiled pipeline modules not used, %s", status)
        return status
    sys.meta_path.insert(0, _Finder(found))
    status = "compiled"
    return status


def is_compiled(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def build(build_dir: Path = BUILD_DIR, package_dir: Path = PACKAGE_DIR) -> None:
    """Compile MODULES into `build_dir` (replaced as a whole, so that a running worker keeps the
    files it mapped). Raises on any failure; nothing is left half-built."""
    # Imported here: only a build needs mypy and setuptools (the `dev` and `native` extras).
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    sources = sources_hash(package_dir)
    root = package_dir.parent
    paths = [str(root / (name.replace(".", "/") + ".py")) for name in MODULES]
    with tempfile.TemporaryDirectory(prefix="consumer-native-") as scratch:
        work = Path(scratch)
        cwd = Path.cwd()
        os.chdir(work)  # mypy reads no project configuration from here; its cache stays here
        try:
            extensions = mypycify(
                ["--ignore-missing-imports", "--cache-dir", str(work / "cache"), *paths],
                group_name=GROUP,
                target_dir=str(work / "c"),
            )
            distribution = Distribution({"name": GROUP, "ext_modules": extensions})
            command = distribution.get_command_obj("build_ext")
            command.build_lib = str(work / "lib")
            command.build_temp = str(work / "temp")
            distribution.run_command("build_ext")
        finally:
            os.chdir(cwd)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")  # what build_ext names them with
        files = {name: name.replace(".", "/") + suffix for name in (*MODULES, f"{GROUP}__mypyc")}
        staged = Path(tempfile.mkdtemp(prefix="_native.", dir=build_dir.parent))
        try:
            for relative in files.values():
                (staged / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(work / "lib" / relative, staged / relative)
            manifest = {"interpreter": interpreter(), "sources": sources, "files": files}
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            if sources_hash(package_dir) != sources:
                raise RuntimeError("the sources changed during the build; build again")
        except BaseException:
            shutil.rmtree(staged)
            raise
    old = build_dir.with_name(build_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if build_dir.exists():
        build_dir.rename(old)
    staged.rename(build_dir)
    shutil.rmtree(old, ignore_errors=True)
