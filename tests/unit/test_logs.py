"""Log tails: read from the end in bounded blocks, capped, with \\r as a line break."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sagellmd.runtime.logs import (
    DAEMON_HEADER,
    last_engine_line,
    log_path,
    open_log,
    read_tail,
    shorten,
    tail_lines,
)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_tail_of_newline_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "a.log", b"".join(b"line %d\n" % i for i in range(1000)))
    assert tail_lines(path, 3) == ["line 997", "line 998", "line 999"]
    assert tail_lines(path, 0) == []
    assert tail_lines(tmp_path / "absent.log", 5) == []
    tail = read_tail(path, 5000)
    assert len(tail.lines) == 1000 and not tail.truncated


def test_file_without_final_newline_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "b.log", b"one\r\ntwo\r\nthree")
    assert tail_lines(path, 2) == ["two", "three"]


def test_carriage_return_progress_is_lines(tmp_path: Path) -> None:
    """tqdm-style output: one `\\n`-less line of `\\r`-separated updates."""
    data = b"".join(b"progress %07d%%\r" % i for i in range(1_300_000))  # ~20 MB
    path = write(tmp_path / "progress.log", data)
    started = time.monotonic()
    lines = tail_lines(path, 2)
    took = time.monotonic() - started
    assert lines == ["progress 1299998%", "progress 1299999%"]
    assert took < 0.5, f"tail of a 20 MB \\r log took {took:.2f}s"


@pytest.mark.parametrize("size_mb", [20, 80])
def test_single_huge_line_is_capped_and_quick(tmp_path: Path, size_mb: int) -> None:
    path = tmp_path / "one-line.log"
    with path.open("wb") as handle:
        handle.write(b"start-")
        chunk = b"x" * (1 << 20)
        for _ in range(size_mb):
            handle.write(chunk)
        handle.write(b"-end")
    started = time.monotonic()
    tail = read_tail(path, 1, max_bytes=1 << 20)
    took = time.monotonic() - started
    assert took < 0.5, f"tail of a {size_mb} MB single-line log took {took:.2f}s"
    assert tail.truncated
    assert len(tail.lines) == 1
    assert tail.lines[0].endswith("x-end")
    assert len(tail.lines[0].encode()) <= 1 << 20
    assert not tail.lines[0].startswith("start-")


def test_cap_keeps_the_newest_whole_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", b"".join(b"%09d\n" % i for i in range(100_000)))  # 1 MB
    tail = read_tail(path, 10_000, max_bytes=10_005)
    assert tail.truncated
    # Only whole lines: the line the cap cut through is left out.
    assert tail.lines == [f"{i:09d}" for i in range(99_000, 100_000)]
    assert read_tail(path, 10, max_bytes=10_000).truncated is False


def test_last_engine_line_skips_the_daemon_header(tmp_path: Path) -> None:
    path = tmp_path / "e.log"
    path.write_text(
        f"{DAEMON_HEADER} 2024-01-01 00:00:00: python -m engine\n"
        "model not found: org/x\n"
        f"{DAEMON_HEADER} 2024-01-01 00:01:00: python -m engine\n"
    )
    # The newest run said nothing: what an older run said is not its reason.
    assert last_engine_line(path) is None
    with path.open("a") as handle:
        handle.write("cuda error: out of memory\n\n")
    assert last_engine_line(path) == "cuda error: out of memory"
    assert last_engine_line(tmp_path / "absent.log") is None


def test_shorten_cuts_at_a_word_boundary() -> None:
    text = "error: " + " ".join(f"word{i}" for i in range(200))
    short = shorten(text, 300)
    assert len(short) <= 300
    assert short.endswith("…")
    kept = short.removesuffix("…").rstrip()
    assert text.startswith(kept)
    assert text[len(kept)] == " "  # the cut is between words, not inside one
    assert shorten("short enough", 300) == "short enough"
    # One long token has no boundary: it is cut hard, still within the limit.
    assert len(shorten("x" * 1000, 300)) <= 300


def test_open_log_creates_a_private_file_and_directory(tmp_path: Path) -> None:
    path = log_path(tmp_path / "logs", "qwen.chat")
    assert path == tmp_path / "logs" / "qwen.chat.log"
    fd = open_log(path)
    try:
        os.write(fd, b"one\n")
    finally:
        os.close(fd)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_open_log_appends_and_makes_an_old_readable_log_private(tmp_path: Path) -> None:
    path = write(tmp_path / "chat.log", b"earlier\n")
    path.chmod(0o644)
    fd = open_log(path)
    try:
        os.write(fd, b"later\n")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"earlier\nlater\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_open_log_is_not_inherited_by_children(tmp_path: Path) -> None:
    fd = open_log(tmp_path / "chat.log")
    try:
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)
