"""Running the `sagellm` CLI as a user would: on a real pseudo-terminal (with a size, a
controlling terminal and ^C), or with stdout on a pipe; optionally with SIGINT ignored, as
a background job of a non-interactive shell starts it."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

CLI = [sys.executable, "-m", "sagellmd.cli.app"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, dump: Callable[[], str]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; output:\n{dump()}")


def event_lines(lines: list[str], engine_id: str, kind: str) -> list[str]:
    """The `events` lines (`ts  engine  type  message`) of one engine and event type."""
    return [line for line in lines if line.split()[1:3] == [engine_id, kind]]


def ignore_sigint() -> None:
    # What `cmd &` in a non-interactive shell does to its job: SIGINT ignored, inherited
    # across exec by the CLI.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def set_size(fd: int, columns: int, rows: int) -> None:
    """Set a terminal's size; the kernel sends SIGWINCH to its foreground process group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class PtyProcess:
    """A command with stdin, stdout and stderr on a new pseudo-terminal of a given size; a
    thread keeps reading the terminal so the child never blocks on a full buffer."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        size: tuple[int, int] = (220, 40),
        sigint_ignored: bool = False,
    ) -> None:
        self.leader, follower = os.openpty()
        set_size(follower, *size)

        def setup() -> None:
            # Runs in the child after setsid (start_new_session): make the pty (its stdin)
            # the controlling terminal, so a ^C typed on it sends SIGINT and a resize
            # SIGWINCH, as a real terminal does.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            if sigint_ignored:
                ignore_sigint()

        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            start_new_session=True,
            preexec_fn=setup,
        )
        os.close(follower)
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready = select.select([self.leader], [], [], 0.2)[0]
                chunk = os.read(self.leader, 65536) if ready else b""
            except OSError:  # EIO once the child closed the terminal, EBADF after close()
                return
            if ready and not chunk:
                return
            if chunk:
                with self._lock:
                    self._chunks.append(chunk)

    def raw(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")

    def text(self) -> str:
        """The output without escape sequences: every frame the Live view drew, in order."""
        return ANSI.sub("", self.raw())

    def type(self, keys: bytes) -> None:
        os.write(self.leader, keys)

    def finish(self, timeout: float) -> int:
        """Wait for the command to exit and for its last output; its exit code."""
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def resize(self, columns: int, rows: int) -> None:
        set_size(self.leader, columns, rows)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(2)
        os.close(self.leader)


class PipeReader:
    """A command whose stdout is a pipe (not a terminal), read line by line by a thread."""

    def __init__(
        self, command: list[str], env: dict[str, str], sigint_ignored: bool = False
    ) -> None:
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=ignore_sigint if sigint_ignored else None,
        )
        self.lines: list[str] = []
        self.err_lines: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.lines),
                (self.process.stderr, self.err_lines),
            )
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def dump(self) -> str:
        return "\n".join([*self.lines, "--- stderr ---", *self.err_lines])

    def interrupt(self, timeout: float = 10) -> tuple[int, str]:
        """Ctrl-C as a signal; the exit code and stderr."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code, "\n".join(self.err_lines)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
