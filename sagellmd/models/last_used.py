"""When an engine last started on each model: `models-last-used.json` in the daemon's home."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "models-last-used.json"


def last_used_path(home: Path) -> Path:
    return home / FILE_NAME


def read_last_used(home: Path) -> dict[str, float]:
    """Model (as engines name it) -> epoch seconds; empty when the file is missing or bad."""
    try:
        data = json.loads(last_used_path(home).read_text())
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        return {}
    return {
        str(model): float(ts)
        for model, ts in models.items()
        if isinstance(ts, int | float) and not isinstance(ts, bool)
    }


def touch_model(home: Path, model: str, clock: Callable[[], float] = time.time) -> None:
    """Record that an engine of `model` starts now; a failure to write is logged, never raised.

    Only the daemon writes the file, from its reconcile loop, so read-modify-write is safe;
    the rename keeps readers (the API, the CLI) from seeing half a file.
    """
    try:
        used = read_last_used(home)
        used[model] = clock()
        fd, temporary = tempfile.mkstemp(dir=home, prefix=".models-last-used.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": 1, "models": used}, handle, indent=1, sort_keys=True)
            os.replace(temporary, last_used_path(home))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        # Bookkeeping for `model list`; an engine must still start on a full or read-only disk.
        log.warning("model=%s cannot record last use in %s: %s", model, home, exc)
