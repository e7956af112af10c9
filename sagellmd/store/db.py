"""Opening the SQLite database safely: refuse a bad file, back it up, migrate it."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

from sagellmd.errors import DatabaseError
from sagellmd.shipped_files import migrations_dir

log = logging.getLogger(__name__)

# Every SQLite 3 file starts with these 16 bytes (https://sqlite.org/fileformat.html).
SQLITE_MAGIC = b"SQLite format 3\x00"
# integrity_check stops after this many problems; the first few say enough.
MAX_REPORTED_PROBLEMS = 5


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the API answers, even across power loss.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_private(path: Path) -> None:
    """Create `path` (empty) as 0600 if it is missing; take group and other bits off it.

    The database holds engine env values (HF_TOKEN...). SQLite gives its -wal and -shm
    files the mode of the database file, so a private database has private sidecars.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def private_sidecars(path: Path) -> None:
    """-wal/-shm left by an older version with looser modes become 0600 too."""
    for sidecar in (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if sidecar.stat().st_mode & 0o077:
                sidecar.chmod(0o600)


def open_database(path: Path) -> Engine:
    """An engine on the SQLite file with WAL, synchronous=FULL and foreign keys on."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(path)
    private_sidecars(path)
    engine = create_engine(f"sqlite:///{path}", future=True)
    event.listen(engine, "connect", _set_pragmas)
    return engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision shipped with this version, all or nothing."""
    config = _alembic_config()
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        # pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so DDL would be
        # committed statement by statement and a failed migration would leave a
        # half-changed schema. With its own handling off, BEGIN below covers everything.
        previous_isolation = driver.isolation_level
        driver.isolation_level = None
        # SQLite's procedure for schema changes (lang_altertable.html): foreign keys off
        # outside the transaction, or a batch migration that recreates a table would
        # cascade-delete the rows that reference it; checked again before the commit.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise DatabaseError(
                        f"the migration left {len(broken)} rows with dangling references"
                        f" (first: table {broken[0][0]}, row {broken[0][1]}); rolled back"
                    )
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
            driver.isolation_level = previous_isolation


def _restore_hint(path: Path) -> str:
    return (
        f"stop sagellmd, move {path.name} (and {path.name}-wal, {path.name}-shm) aside and"
        f" restore a backup ({path.name}.bak-* beside it, or your own), or move it aside to"
        " start with an empty desired state; see docs/operations.md"
    )


@contextlib.contextmanager
def _read_only(path: Path) -> Any:
    """A read-only connection that leaves no -wal/-shm files behind that were not there."""
    sidecars = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    existed = {sidecar: sidecar.exists() for sidecar in sidecars}
    # mode=ro never writes the main file: no checkpoint, no journal-mode change on close.
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()
        # A reader of a WAL file creates an empty -wal and a -shm; a refused or merely
        # inspected file should look exactly as it did. Files that were there before may
        # belong to another reader, so only the ones this connection created go.
        for sidecar in sidecars:
            if not existed[sidecar]:
                with contextlib.suppress(FileNotFoundError):
                    if sidecar.name.endswith("-shm") or sidecar.stat().st_size == 0:
                        sidecar.unlink()


def inspect_database(path: Path) -> str | None:
    """Check an existing database file and return its alembic revision (None: no schema).

    Raises DatabaseError for a file that is not SQLite, fails `PRAGMA integrity_check`,
    or holds tables but no sagellm schema. Reads only; the file is left as it was.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise DatabaseError(f"cannot read the database {path}: {exc.strerror}") from exc
    if header and header != SQLITE_MAGIC:
        raise DatabaseError(
            f"{path} is not an SQLite database (it starts with {header[:16]!r});"
            f" sagellmd left it untouched. {_restore_hint(path)}",
            {"path": str(path), "reason": "not_sqlite"},
        )
    try:
        with _read_only(path) as connection:
            rows = connection.execute(f"PRAGMA integrity_check({MAX_REPORTED_PROBLEMS})")
            problems = [row[0] for row in rows.fetchall()]
            if problems != ["ok"]:
                raise _corrupt(path, "; ".join(problems))
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "alembic_version" not in tables:
                revision = None
            else:
                found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
                revision = found[0][0] if found else None
    except sqlite3.DatabaseError as exc:
        # "file is not a database", "database disk image is malformed": the header or
        # the schema page is damaged beyond what integrity_check can report row by row.
        raise _corrupt(path, str(exc)) from exc
    if revision is None and tables - {"alembic_version"}:
        raise DatabaseError(
            f"{path} holds tables ({', '.join(sorted(tables)[:5])}) but no sagellm schema"
            f" version; it is not a sagellm database and sagellmd left it untouched."
            f" {_restore_hint(path)}",
            {"path": str(path), "reason": "foreign"},
        )
    return revision


def _corrupt(path: Path, problems: str) -> DatabaseError:
    return DatabaseError(
        f"the database {path} is corrupt (integrity check: {problems});"
        f" sagellmd left it untouched. {_restore_hint(path)}",
        {"path": str(path), "reason": "corrupt", "problems": problems},
    )


def backup_database(path: Path, revision: str | None, now: float | None = None) -> Path:
    """Copy the database beside itself as `NAME.bak-<revision|empty>-<UTC time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.bak-{revision or 'empty'}-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.bak-{revision or 'empty'}-{stamp}-{counter}")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    make_private(partial)  # a backup holds the same secrets as the database
    # The backup API reads through SQLite, so commits still in the -wal file are included,
    # which a plain file copy of sagellm.db would miss.
    with _read_only(path) as source:
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)
            # A self-contained single file: restoring it is one copy, no -wal to carry.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    # Renamed only once complete and on disk, so a crash never leaves a half backup
    # under a name that looks finished.
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    partial.rename(target)
    _fsync_dir(path.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_database(path: Path) -> Engine:
    """Check, back up when a migration is due, and migrate the daemon's database.

    A corrupt, foreign or newer database raises DatabaseError and is never written.
    """
    script = ScriptDirectory.from_config(_alembic_config())
    heads = set(script.get_heads())
    exists = path.exists() and path.stat().st_size > 0
    revision = inspect_database(path) if exists else None
    if revision is not None and revision not in heads:
        known = {item.revision for item in script.walk_revisions()}
        if revision not in known:
            raise DatabaseError(
                f"this database was written by a newer sagellmd (revision {revision});"
                f" upgrade sagellmd or restore a backup. sagellmd left {path} untouched"
                f" (this version knows revisions up to {', '.join(sorted(heads))})",
                {"path": str(path), "reason": "newer", "revision": revision},
            )
    backup = None
    if exists and revision not in heads:
        backup = backup_database(path, revision)
        log.info(
            "database=%s revision=%s backup=%s: backed up before migrating",
            path,
            revision or "empty",
            backup,
        )
    engine = open_database(path)
    try:
        migrate(engine)
    except Exception as exc:
        engine.dispose()
        where = f"; the database as it was before is in {backup}" if backup else ""
        raise DatabaseError(
            f"migrating {path} from revision {revision or 'empty'} failed: {exc}{where}",
            {"path": str(path), "reason": "migration", "backup": str(backup or "")},
        ) from exc
    if revision not in heads:
        log.info("database=%s migrated from %s to %s", path, revision or "empty", ",".join(heads))
    return engine
