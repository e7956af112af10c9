"""Engine log files: where they are and their last lines."""

from __future__ import annotations

import os
from pathlib import Path


def log_path(logs_dir: Path, engine_id: str) -> Path:
    return logs_dir / f"{engine_id}.log"


def tail_lines(path: Path, count: int, block: int = 65536) -> list[str]:
    """The last `count` lines of a file, reading from its end only."""
    if count <= 0 or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        data = b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(block, size)
            size -= step
            handle.seek(size)
            data = handle.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]
