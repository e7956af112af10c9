"""Storage failures (full disk, I/O error, read-only file) described so a user can fix them."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.exc import OperationalError

from sagellmd.errors import SagellmError

# What SQLite says (sqlite3_errstr) for the failures that are the disk's, not the daemon's.
STORAGE_MESSAGES = (
    "database or disk is full",
    "disk i/o error",
    "attempt to write a readonly database",
    "unable to open database file",
    "database is locked",
)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


class StorageUnavailableError(SagellmError):
    """The daemon's database cannot be written right now; nothing was changed."""

    code = "storage_unavailable"
    http_status = 503
    exit_code = 1


def is_storage_failure(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | sqlite3.OperationalError):
        text = str(exc.orig if isinstance(exc, OperationalError) else exc).lower()
        return any(message in text for message in STORAGE_MESSAGES)
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (the disk to free or fix)."""
    current = path.resolve()
    while not current.exists():
        current = current.parent
    while not current.is_mount() and current != current.parent:
        current = current.parent
    return current


def storage_error(exc: BaseException, db_path: Path) -> StorageUnavailableError:
    """The error the API answers (503) for a failed write of the database at `db_path`."""
    reason = str(exc.orig) if isinstance(exc, OperationalError) else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    disk = mount_point(db_path.parent)
    try:
        free = f"{shutil.disk_usage(db_path.parent).free / 1024**2:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return StorageUnavailableError(
        f"sagellmd cannot write its database {db_path}: {reason}. The disk mounted at {disk}"
        f" ({free}) must have room and be writable; free space there (or fix the mount)"
        " and retry. Nothing was changed.",
        {"path": str(db_path), "mount": str(disk), "reason": reason},
    )
