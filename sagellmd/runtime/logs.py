"""Engine log files: where they are, how they are opened, and their last lines."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# The daemon's own line before every spawn; an engine's last words never start with it.
DAEMON_HEADER = "=== sagellm"
# A tail answers at most this much text: a log is the engine's, its lines can be any size.
MAX_TAIL_BYTES = 1 << 20
# A crash message quotes the last line; this much of the log end is enough to find it.
LAST_LINE_BYTES = 64 << 10
# How much of an engine's last line a status message quotes.
QUOTED_LINE_CHARS = 300
# `\r` too: progress bars (tqdm, pip) rewrite one line with it and never end it with `\n`.
LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def log_path(logs_dir: Path, engine_id: str) -> Path:
    return logs_dir / f"{engine_id}.log"


def open_log(path: Path) -> int:
    """An append descriptor on the engine's log, created 0600 (engines print secrets too)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)  # a log an older version created world-readable
    return fd


@dataclass(frozen=True)
class LogTail:
    """The last lines of a log; `truncated` when the byte cap cut what was asked for;
    `size` the file's size when read (where a follower continues)."""

    lines: list[str]
    truncated: bool
    max_bytes: int
    size: int = 0


def read_tail(
    path: Path, count: int, max_bytes: int = MAX_TAIL_BYTES, block: int = 1 << 16
) -> LogTail:
    """The last `count` lines, reading backwards in blocks; never more than `max_bytes`.

    Linear in the bytes read, and they are bounded: a single 80 MB line costs one
    `max_bytes` read, not a quadratic rescan of everything read so far.
    """
    try:
        handle = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return LogTail([], False, max_bytes)
    with handle:
        end = size = os.fstat(handle.fileno()).st_size
        if count <= 0:
            return LogTail([], False, max_bytes, size)
        chunks: list[bytes] = []
        read = 0
        breaks = 0
        # `\r\n` counts twice here, so twice the wanted breaks is surely enough lines.
        while end > 0 and read < max_bytes and breaks <= 2 * count + 1:
            step = min(block, end, max_bytes - read)
            end -= step
            handle.seek(end)
            chunk = handle.read(step)
            chunks.append(chunk)
            read += len(chunk)
            breaks += chunk.count(b"\n") + chunk.count(b"\r")
    parts = LINE_BREAK.split(b"".join(reversed(chunks)))
    if parts and parts[-1] == b"":
        parts.pop()  # the file ends with a line break: no empty last line
    truncated = False
    if end > 0 and parts:
        # The first part starts where reading stopped, most likely mid-line.
        if len(parts) > count:
            parts = parts[-count:]
        elif len(parts) > 1:
            parts = parts[1:]
            truncated = True
        else:
            truncated = True  # one line longer than the cap: its end is what we have
    lines = [part.decode(errors="replace") for part in parts[-count:]]
    return LogTail(lines, truncated, max_bytes, size)


@dataclass(frozen=True)
class LogChunk:
    """The complete lines written after an offset, and the offset past them; `reset` when
    the log shrank (rotated, truncated, removed) and was read from its start instead."""

    lines: list[str]
    offset: int
    reset: bool


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return 0


def read_after(path: Path, offset: int, max_bytes: int = MAX_TAIL_BYTES) -> LogChunk:
    """The lines that end after byte `offset` (at most `max_bytes` of them); a line not yet
    ended stays for the next read, unless it alone fills `max_bytes`."""
    try:
        handle = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return LogChunk([], 0, offset > 0)
    with handle:
        size = os.fstat(handle.fileno()).st_size
        reset = size < offset
        start = 0 if reset else offset
        handle.seek(start)
        data = handle.read(min(size - start, max_bytes))
    # A lone `\r` at the end may be the first half of a `\r\n` still being written.
    end = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
    if end == 0 and len(data) >= max_bytes:
        end = len(data)  # one line longer than the cap: hand it on in pieces
    parts = LINE_BREAK.split(data[:end])
    if parts and parts[-1] == b"":
        parts.pop()
    return LogChunk([part.decode(errors="replace") for part in parts], start + end, reset)


def tail_lines(path: Path, count: int, max_bytes: int = MAX_TAIL_BYTES) -> list[str]:
    """The last `count` lines of a file (at most `max_bytes` of them), from its end only."""
    return read_tail(path, count, max_bytes).lines


def last_engine_line(path: Path, look_back: int = 50) -> str | None:
    """The engine's last non-empty line of its newest run; None if it printed nothing."""
    lines = read_tail(path, look_back, LAST_LINE_BYTES).lines
    for line in reversed(lines):
        text = line.strip()
        if text.startswith(DAEMON_HEADER):
            return None  # everything after our header is empty: this run said nothing
        if text:
            return text
    return None


def shorten(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut at a word boundary and marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    boundary = cut.rfind(" ")
    # Without a space in the second half, a hard cut keeps more of the message.
    if boundary > limit // 2:
        cut = cut[:boundary]
    return cut.rstrip() + "…"
