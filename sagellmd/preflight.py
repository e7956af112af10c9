"""What sagellmd checks before it creates anything: the presets it is told to declare exist,
and the home and database can be written."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

from sagellmd.config import Settings
from sagellmd.errors import AlreadyRunningError, ConfigError
from sagellmd.presets import find_preset


def check_presets(settings: Settings, names: list[str]) -> None:
    """`--preset NAME` for a preset that does not exist fails now, not after the home."""
    for name in names:
        find_preset(name, settings.home)


def _not_writable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"{path}: read-only or not writable ({exc.strerror}); sagellmd keeps its database,"
        " token and lock there: make it writable or use another --home"
    )


def _probe_directory(directory: Path) -> None:
    """Really create a file: root ignores modes, only a write tells a read-only mount."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".sagellmd-write-check-")
    except OSError as exc:
        raise _not_writable(directory, exc) from None
    os.close(fd)
    os.unlink(name)


def _probe_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        raise _not_writable(path, exc) from None
    os.close(fd)


def check_home(settings: Settings) -> None:
    """Refuse a home (or its database) that cannot be written, before creating anything."""
    home = settings.home
    if home.exists() and not home.is_dir():
        raise ConfigError(f"--home {home}: exists and is not a directory; use another --home")
    if not home.exists():
        # It will be created: the nearest directory that exists must take it.
        parent = next(p for p in home.parents if p.exists())
        if not parent.is_dir():
            raise ConfigError(f"--home {home}: {parent} is not a directory; use another --home")
        _probe_directory(parent)
        return
    _probe_directory(home)
    database = settings.db_path
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), settings.lock_path):
        if path.exists():
            _probe_file(path)


def lock_holder(lock_path: Path) -> str | None:
    """The pid in the home's lock if another sagellmd holds it; creates nothing."""
    try:
        handle = lock_path.open("r")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def already_running(settings: Settings) -> AlreadyRunningError | None:
    holder = lock_holder(settings.lock_path)
    if holder is None:
        return None
    return AlreadyRunningError(
        f"another sagellmd (pid {holder}) is already running on {settings.home};"
        " stop it first or use another --home"
    )
