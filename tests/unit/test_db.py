"""Owns the tests of sagellmd/store/db.py: refusing bad files, backups, migrating at start."""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from sagellmd.errors import DatabaseError
from sagellmd.shipped_files import migrations_dir
from sagellmd.spec import parse_preset
from sagellmd.store import db
from sagellmd.store.db import backup_database, inspect_database, prepare_database
from sagellmd.store.repository import Store

HEAD = ScriptDirectory(str(migrations_dir())).get_current_head()
BACKUP_NAME = re.compile(r"^sagellm\.db\.bak-(?P<revision>[^-]+)-\d{8}T\d{6}Z$")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "sagellm.db"


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file in the folder with a hash of its bytes: what 'untouched' compares.

    A -shm file is SQLite's shared-memory index, rewritten by any reader; only its
    presence counts.
    """
    return {
        path.name: "" if path.name.endswith("-shm") else sha256(path)
        for path in sorted(folder.iterdir())
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A committed and closed sqlite3 connection (sqlite3's own `with` only commits)."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            yield connection
    finally:
        connection.close()


def backups(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if ".bak-" in path.name)


def make_database(path: Path, events: int = 0) -> None:
    """A migrated database with `events` rows, closed so that everything is in the main file."""
    engine = prepare_database(path)
    try:
        with engine.begin() as connection:
            for number in range(events):
                connection.exec_driver_sql(
                    "INSERT INTO events (ts, engine, type, message, generation)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (1.0 + number, f"engine-{number % 7}", "started", "x" * 40, 1),
                )
    finally:
        engine.dispose()
    assert not path.with_name(path.name + "-wal").exists()


def refuse(path: Path) -> DatabaseError:
    before = fingerprint(path.parent)
    with pytest.raises(DatabaseError) as caught:
        prepare_database(path)
    assert fingerprint(path.parent) == before, "a refused database must be byte-identical"
    assert caught.value.exit_code == 2
    assert str(path) in caught.value.message
    return caught.value


def revision_of(path: Path) -> str | None:
    with connect(path) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


# -- accepted files --------------------------------------------------------------


def test_a_new_home_gets_a_migrated_database_and_no_backup(db_path: Path):
    engine = prepare_database(db_path)
    engine.dispose()
    assert revision_of(db_path) == HEAD
    assert backups(db_path.parent) == []


def test_a_database_at_head_is_opened_without_a_backup(db_path: Path):
    make_database(db_path, events=3)
    engine = prepare_database(db_path)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM events").scalar() == 3
    finally:
        engine.dispose()
    assert backups(db_path.parent) == []


def test_a_zero_byte_file_is_an_empty_database(db_path: Path):
    db_path.parent.mkdir(parents=True)
    db_path.touch()
    prepare_database(db_path).dispose()
    assert revision_of(db_path) == HEAD
    assert backups(db_path.parent) == []


def test_a_database_without_schema_is_backed_up_as_empty_before_migrating(db_path: Path):
    db_path.parent.mkdir(parents=True)
    with connect(db_path) as connection:
        connection.execute("PRAGMA user_version=7")  # a valid SQLite file with no tables
    prepare_database(db_path).dispose()
    (backup,) = backups(db_path.parent)
    assert BACKUP_NAME.match(backup.name)["revision"] == "empty"
    assert revision_of(db_path) == HEAD


# -- refused files ---------------------------------------------------------------


def test_garbage_bytes_are_refused_and_left_untouched(db_path: Path):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(random.Random(1).randbytes(10_000))
    error = refuse(db_path)
    assert "not an SQLite database" in error.message
    assert error.details["reason"] == "not_sqlite"


def test_a_text_file_is_refused(db_path: Path):
    db_path.parent.mkdir(parents=True)
    db_path.write_text("engines:\n  - chat\n")
    assert refuse(db_path).details["reason"] == "not_sqlite"


def test_a_database_from_a_newer_sagellmd_is_refused_and_left_untouched(db_path: Path):
    make_database(db_path, events=2)
    with connect(db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'zzzz'")
    error = refuse(db_path)
    assert (
        "this database was written by a newer sagellmd (revision zzzz);"
        " upgrade sagellmd or restore a backup"
    ) in error.message
    assert error.details["reason"] == "newer"
    assert backups(db_path.parent) == []


def test_a_corrupt_page_in_the_middle_is_refused_and_left_untouched(db_path: Path):
    make_database(db_path, events=3000)
    with connect(db_path) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    pages = db_path.stat().st_size // page_size
    assert pages > 20, "the table should span many pages"
    # A whole b-tree page of garbage: its page-type byte and cell pointers become nonsense.
    with db_path.open("r+b") as handle:
        handle.seek((pages // 2) * page_size)
        handle.write(random.Random(2).randbytes(page_size))
    error = refuse(db_path)
    assert "corrupt" in error.message and "integrity check" in error.message
    assert error.details["reason"] == "corrupt"
    assert "restore a backup" in error.message


def test_a_damaged_schema_page_is_refused(db_path: Path):
    make_database(db_path)
    with db_path.open("r+b") as handle:
        handle.seek(100)  # page 1 after the file header: the schema table's b-tree page
        handle.write(b"\xff" * 200)
    assert refuse(db_path).details["reason"] == "corrupt"


def test_an_sqlite_file_of_another_program_is_refused(db_path: Path):
    db_path.parent.mkdir(parents=True)
    with connect(db_path) as connection:
        connection.execute("CREATE TABLE bookmarks (url TEXT)")
    error = refuse(db_path)
    assert error.details["reason"] == "foreign"
    assert "bookmarks" in error.message


# -- backups and migrations ------------------------------------------------------


def test_backup_includes_commits_still_in_the_wal(db_path: Path):
    make_database(db_path)
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute(
            "INSERT INTO events (ts, engine, type, message, generation)"
            " VALUES (1, 'solo', 'started', 'only in the wal', 1)"
        )
        assert db_path.with_name("sagellm.db-wal").stat().st_size > 0
        backup = backup_database(db_path, HEAD, now=0)
    finally:
        writer.close()
    assert backup.name == f"sagellm.db.bak-{HEAD}-19700101T000000Z"
    with connect(backup) as copy:
        assert copy.execute("SELECT message FROM events").fetchall() == [("only in the wal",)]
        # One self-contained file: restoring it needs no -wal beside it.
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not list(db_path.parent.glob("*.partial"))


def test_two_backups_in_the_same_second_get_different_names(db_path: Path):
    make_database(db_path)
    first = backup_database(db_path, HEAD, now=0)
    second = backup_database(db_path, HEAD, now=0)
    assert first != second and first.exists() and second.exists()


@pytest.fixture
def newer_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shipped migrations plus one more revision on top, as the next version would ship."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(db, "migrations_dir", lambda: folder)
    yield folder


def add_revision(folder: Path, body: str) -> None:
    (folder / "versions" / "9999_next.py").write_text(
        f'"""A later revision, for tests."""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "9999"\ndown_revision = "{HEAD}"\nbranch_labels = None\n'
        f"depends_on = None\n\n\ndef upgrade():\n    {body}\n"
    )


def test_a_migration_is_preceded_by_a_backup_of_the_old_revision(
    db_path: Path, newer_migrations: Path
):
    make_database(db_path, events=5)
    add_revision(newer_migrations, 'op.add_column("events", sa.Column("extra", sa.Text()))')
    before = sha256(db_path)
    prepare_database(db_path).dispose()
    (backup,) = backups(db_path.parent)
    assert BACKUP_NAME.match(backup.name)["revision"] == HEAD
    assert sha256(backup) != before  # journal mode changed
    assert revision_of(backup) == HEAD
    with connect(backup) as copy:
        assert copy.execute("SELECT count(*) FROM events").fetchone()[0] == 5
    assert revision_of(db_path) == "9999"
    # Once migrated, the next start has nothing to back up.
    prepare_database(db_path).dispose()
    assert len(backups(db_path.parent)) == 1


def test_a_failed_migration_names_the_backup_and_keeps_the_old_schema(
    db_path: Path, newer_migrations: Path
):
    make_database(db_path, events=1)
    add_revision(
        newer_migrations,
        'op.add_column("events", sa.Column("extra", sa.Text()))\n'
        '    raise RuntimeError("disk on fire")',
    )
    with pytest.raises(DatabaseError) as caught:
        prepare_database(db_path)
    (backup,) = backups(db_path.parent)
    assert "disk on fire" in caught.value.message and str(backup) in caught.value.message
    # SQLite DDL is transactional: the half-done migration is rolled back.
    assert revision_of(db_path) == HEAD
    with connect(db_path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(events)")]
    assert "extra" not in columns


def test_inspect_reports_the_revision_without_writing(db_path: Path):
    make_database(db_path)
    before = fingerprint(db_path.parent)
    assert inspect_database(db_path) == HEAD
    assert fingerprint(db_path.parent) == before


def test_a_migration_that_recreates_a_referenced_table_keeps_the_referencing_rows(
    db_path: Path, newer_migrations: Path
):
    engine = prepare_database(db_path)
    try:
        document = {"version": 1, "name": "tiny", "engines": [{"name": "chat", "model": "o/m"}]}
        Store(engine).set_preset(parse_preset(document), "builtin", "preset set tiny")
    finally:
        engine.dispose()
    # Batch mode copies active_presets to a new table and drops the old one; with foreign
    # keys on, that DROP would cascade to desired_engines (ON DELETE CASCADE).
    add_revision(
        newer_migrations,
        'with op.batch_alter_table("active_presets", recreate="always") as batch:\n'
        '        batch.add_column(sa.Column("extra", sa.Text()))',
    )
    prepare_database(db_path).dispose()
    with connect(db_path) as connection:
        assert connection.execute("SELECT id FROM desired_engines").fetchall() == [("tiny.chat",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_database_at_the_first_shipped_revision_is_backed_up_then_upgraded(db_path: Path):
    script = ScriptDirectory(str(migrations_dir()))
    first = list(script.walk_revisions())[-1].revision
    if first == HEAD:
        pytest.skip("only one revision is shipped: nothing to upgrade from")
    engine = db.open_database(db_path)
    try:
        config = db._alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, first)
    finally:
        engine.dispose()
    prepare_database(db_path).dispose()
    (backup,) = backups(db_path.parent)
    assert BACKUP_NAME.match(backup.name)["revision"] == first
    assert revision_of(backup) == first
    assert revision_of(db_path) == HEAD
