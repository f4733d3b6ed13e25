"""The compiled pipeline modules (consumer/native.py): loaded only from a build made from the
sources as they are, by this interpreter; never half. The pipeline's own tests run in both forms
(`make test` runs tests/unit/pipeline again with CONSUMER_NATIVE=off)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumer import native


def _package(root: Path) -> Path:
    package = root / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "step.py").write_text("X = 1\n")
    return package


def _build(root: Path, package: Path, **manifest: object) -> Path:
    build = root / "build"
    build.mkdir()
    (build / "step.so").write_bytes(b"")
    content = {
        "interpreter": native.interpreter(),
        "sources": native.sources_hash(package),
        "files": {"pkg.sub.step": "step.so"},
    } | manifest
    (build / native.MANIFEST).write_text(json.dumps(content))
    return build


def test_a_build_of_these_sources_by_this_interpreter_is_current(tmp_path: Path) -> None:
    package = _package(tmp_path)
    build = _build(tmp_path, package)
    assert native.check(build, package) == {"pkg.sub.step": build / "step.so"}


def test_no_build_is_absent(tmp_path: Path) -> None:
    assert native.check(tmp_path, _package(tmp_path)) == "absent"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("edit", "the package's sources changed"),
        ("add", "the package's sources changed"),
        ("rename", "the package's sources changed"),
        ("interpreter", "built for cpython-310 3.10.0"),
        ("missing", "missing"),
        ("manifest", "unreadable manifest"),
    ],
)
def test_anything_else_is_stale(tmp_path: Path, change: str, reason: str) -> None:
    package = _package(tmp_path)
    build = _build(
        tmp_path,
        package,
        **({"interpreter": "cpython-310 3.10.0"} if change == "interpreter" else {}),
    )
    step = package / "sub" / "step.py"
    if change == "edit":
        step.write_text("X = 2\n")
    elif change == "add":
        (package / "sub" / "new.py").write_text("")
    elif change == "rename":
        step.rename(package / "sub" / "other.py")
    elif change == "missing":
        (build / "step.so").unlink()
    elif change == "manifest":
        (build / native.MANIFEST).write_text("{")
    found = native.check(build, package)
    assert isinstance(found, str)
    assert found.startswith("stale: ")
    assert reason in found


def test_the_hash_covers_every_python_file_and_nothing_else(tmp_path: Path) -> None:
    package = _package(tmp_path)
    before = native.sources_hash(package)
    (package / "data.so").write_bytes(b"\0")
    assert native.sources_hash(package) == before
    (package / "sub" / "step.py").write_text("X = 1 \n")
    assert native.sources_hash(package) != before


def test_this_process_runs_the_compiled_modules_where_a_build_is_current() -> None:
    if native.status == "off":
        pytest.skip("the compiled modules are turned off (CONSUMER_NATIVE=off)")
    found = native.check(native.BUILD_DIR)
    if not isinstance(found, dict):
        pytest.skip(f"no current build of the compiled modules ({found}): `make native`")
    assert native.status == "compiled"
    for name in native.MODULES:
        module = importlib.import_module(name)
        assert native.is_compiled(module), name
        assert Path(str(module.__file__)).is_relative_to(native.BUILD_DIR)
    assert not native.is_compiled(importlib.import_module("consumer.pipeline.save"))


def _run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_turned_off_the_modules_run_as_python() -> None:
    result = _run(
        "import consumer.pipeline.plugins as m\n"
        "from consumer import native\n"
        "print(native.status, native.is_compiled(m), m.__file__)",
        CONSUMER_NATIVE="off",
    )
    status, compiled, file = result.stdout.split()
    assert (status, compiled) == ("off", "False")
    assert file.endswith("consumer/pipeline/plugins.py")


# In a fresh interpreter, the modules turned off at the import of `consumer` and then the build
# in ARGV[1] offered to install(): what it decided, and what `plugins` then is.
_INSTALL = """
import os, sys
from pathlib import Path
from consumer import native
if sys.argv[2] == "imported":
    import consumer.pipeline.tags
os.environ["CONSUMER_NATIVE"] = ""
print(native.install(Path(sys.argv[1])))
import consumer.pipeline.plugins as m
print(native.is_compiled(m))
"""


def _install(build: Path, case: str = "fresh") -> tuple[list[str], str]:
    result = _run(_INSTALL, str(build), case, CONSUMER_NATIVE="off")
    return result.stdout.splitlines(), result.stderr


def _copy_of_the_build(tmp_path: Path) -> Path:
    if not isinstance(native.check(native.BUILD_DIR), dict):
        pytest.skip("no current build of the compiled modules: `make native`")
    return Path(shutil.copytree(native.BUILD_DIR, tmp_path / "build"))


def test_a_current_build_anywhere_is_loaded(tmp_path: Path) -> None:
    assert _install(_copy_of_the_build(tmp_path)) == (["compiled", "True"], "")


def test_a_stale_build_is_never_loaded_and_says_why(tmp_path: Path) -> None:
    build = _copy_of_the_build(tmp_path)
    manifest = json.loads((build / native.MANIFEST).read_text())
    (build / native.MANIFEST).write_text(json.dumps(manifest | {"sources": "0" * 64}))
    (status, compiled), stderr = _install(build)
    assert status.startswith("stale: the package's sources changed")
    assert compiled == "False"
    assert "compiled pipeline modules not used, stale" in stderr


def test_modules_already_imported_as_python_are_not_mixed_with_compiled_ones(
    tmp_path: Path,
) -> None:
    (status, compiled), _stderr = _install(_copy_of_the_build(tmp_path), "imported")
    assert status == "stale: already imported as Python: consumer.pipeline.tags"
    assert compiled == "False"


def test_the_status_command_says_what_the_build_is_and_what_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from consumer import cli

    assert cli.main(["native", "status"]) == 0
    found = native.check(native.BUILD_DIR)
    built = "current" if isinstance(found, dict) else found
    assert capsys.readouterr().out == (
        f"compiled pipeline modules: build {built}; this process runs: {native.status}\n"
    )


def test_an_optional_build_that_cannot_be_made_says_so_and_succeeds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from consumer import cli

    def no_compiler() -> None:
        raise SystemExit("error: command 'gcc' failed: No such file or directory")

    monkeypatch.setattr(native, "build", no_compiler)
    assert cli.main(["native", "build", "--optional"]) == 0
    assert "not built" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["native", "build"])
