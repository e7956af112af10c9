"""Reading a log after a byte offset: complete lines only, the offset past them, a reset when
the log shrank, and the tail's size where a follower starts."""

from __future__ import annotations

from pathlib import Path

from sagellmd.runtime.logs import LogChunk, read_after, read_tail


def test_only_complete_lines_after_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthr")
    start = read_after(path, 0)
    assert start == LogChunk(["one", "two"], 8, False)
    assert read_after(path, start.offset) == LogChunk([], 8, False)
    with path.open("ab") as handle:
        handle.write(b"ee\r\nfour\rfive")
    assert read_after(path, 8) == LogChunk(["three", "four"], 20, False)


def test_a_trailing_carriage_return_waits_for_its_line_feed(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\r")
    assert read_after(path, 0) == LogChunk([], 0, False)
    with path.open("ab") as handle:
        handle.write(b"\ntwo\n")
    assert read_after(path, 0) == LogChunk(["one", "two"], 9, False)


def test_a_shrunk_or_removed_log_resets(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"after rotation\n")
    assert read_after(path, 500) == LogChunk(["after rotation"], 15, True)
    assert read_after(tmp_path / "gone.log", 500) == LogChunk([], 0, True)
    assert read_after(tmp_path / "gone.log", 0) == LogChunk([], 0, False)


def test_reads_are_capped_and_a_huge_line_comes_in_pieces(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"x" * 25 + b"\nshort\n")
    first = read_after(path, 0, max_bytes=10)
    assert first == LogChunk(["x" * 10], 10, False)
    lines = list(first.lines)
    offset = first.offset
    while True:
        chunk = read_after(path, offset, max_bytes=10)
        if not chunk.lines:
            break
        lines += chunk.lines
        offset = chunk.offset
    assert offset == path.stat().st_size
    assert "".join(lines[:3]) == "x" * 25 and lines[-1] == "short"


def test_the_tail_carries_the_size_it_read_to(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")
    assert read_tail(path, 1).size == 8
    assert read_tail(path, 0).size == 8
    assert read_tail(tmp_path / "none.log", 5).size == 0
