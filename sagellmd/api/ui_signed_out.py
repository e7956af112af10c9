"""The signed-out session ids, kept in `<home>/ui-signed-out.json` so that a copy of a
cookie taken before a sign-out stays refused after a daemon restart."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from sagellmd.api.ui_sessions import UiSessions

log = logging.getLogger(__name__)
FILE_NAME = "ui-signed-out.json"


def load(path: Path, now: float) -> dict[str, float]:
    """The ids not yet expired; an unreadable or foreign file counts as none (logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("signed-out sessions file=%s unreadable (%s); ignoring it", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        sid: float(expiry)
        for sid, expiry in data.items()
        if isinstance(sid, str) and isinstance(expiry, int | float) and expiry > now
    }


def save(path: Path, revoked: dict[str, float]) -> None:
    """Written under another name and renamed (mode 0600): never half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(revoked, handle)
        os.replace(temporary, path)
    except OSError as exc:
        # The sign-out still holds until the daemon restarts; the cookie is gone anyway.
        log.warning("signed-out sessions file=%s not written: %s", path, exc)


def sessions_in_home(home: Path) -> UiSessions:
    path = home / FILE_NAME
    return UiSessions(_revoked=load(path, time.time()), persist=lambda ids: save(path, ids))
