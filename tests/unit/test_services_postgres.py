"""`scripts/services.py` finds whichever PostgreSQL server the machine offers (14 or newer, the
newest first) instead of assuming one version, and keeps the server's files where the server's
user can reach them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scripts import services
from scripts.services import Stack


def fake_server(bindir: Path, version: str) -> Path:
    """A folder with initdb, pg_ctl and a postgres that reports `version`."""
    bindir.mkdir(parents=True)
    for name in ("initdb", "pg_ctl"):
        (bindir / name).write_text("#!/bin/sh\nexit 0\n")
    (bindir / "postgres").write_text(f'#!/bin/sh\necho "postgres (PostgreSQL) {version}"\n')
    for program in bindir.iterdir():
        program.chmod(0o755)
    return bindir


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No PostgreSQL but the fake ones under tmp_path: PATH and $PG_BIN point nowhere else."""
    monkeypatch.delenv("PG_BIN", raising=False)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(
        services, "PG_BIN_PATTERNS", (f"{tmp_path}/lib/postgresql/*/bin", f"{tmp_path}/pgsql-*/bin")
    )
    return tmp_path


def test_the_newest_supported_server_is_taken(machine: Path) -> None:
    fake_server(machine / "lib/postgresql/13/bin", "13.14")
    fake_server(machine / "lib/postgresql/16/bin", "16.4 (Debian 16.4-1)")
    newest = fake_server(machine / "pgsql-17/bin", "17.2")
    assert services.find_pg_bin() == (newest, 17)


def test_a_server_older_than_14_is_not_taken(machine: Path) -> None:
    fake_server(machine / "lib/postgresql/13/bin", "13.14")
    assert services.find_pg_bin() is None


def test_pg_bin_names_the_one_folder_to_use(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_server(machine / "lib/postgresql/17/bin", "17.2")
    chosen = fake_server(machine / "elsewhere", "15.6")
    monkeypatch.setenv("PG_BIN", str(chosen))
    assert services.find_pg_bin() == (chosen, 15)
    monkeypatch.setenv("PG_BIN", str(machine / "nothing-here"))
    assert services.find_pg_bin() is None


def test_a_folder_without_the_server_programs_is_not_a_server(machine: Path) -> None:
    client_only = machine / "lib/postgresql/16/bin"
    client_only.mkdir(parents=True)
    (client_only / "psql").write_text("#!/bin/sh\n")
    assert services.find_pg_bin() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_under_root_the_server_files_live_outside_the_checkout(tmp_path: Path) -> None:
    one = Stack(cache=tmp_path / "a" / ".cache").pg_folder
    other = Stack(cache=tmp_path / "b" / ".cache").pg_folder
    assert one != other
    assert not one.is_relative_to(tmp_path)
    assert one.parent.name == services.PG_FOLDER


@pytest.mark.skipif(os.geteuid() == 0, reason="root hands the server to the postgres user")
def test_under_another_user_the_server_files_stay_in_the_cache(tmp_path: Path) -> None:
    assert Stack(cache=tmp_path).pg_folder == tmp_path / "postgres"
