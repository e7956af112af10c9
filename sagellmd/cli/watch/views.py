"""The three outputs of `sagellm status --watch`: a rich Live screen, plain lines, JSON lines."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from rich.live import Live

from sagellmd.cli.render import console
from sagellmd.cli.watch.screen import watch_screen
from sagellmd.cli.watch.snapshot import Snapshot, clock_text


class WatchView(Protocol):
    """Where the watch loop shows what it learnt."""

    def show(self, snapshot: Snapshot) -> None:
        """A new status (after an event, or after reconnecting)."""

    def tick(self) -> None:
        """Nothing happened for a while: only time-derived columns may change."""

    def reconnecting(self, reason: str) -> None:
        """The daemon did not answer; called on every failed attempt."""

    def close(self) -> None: ...


class LiveWatchView:
    """A rich Live screen redrawn in place; the last frame stays on screen at exit.

    A resize of the terminal (SIGWINCH) redraws at once at the new size, rather than at
    the next answer of the long-poll: the signal handler runs in the main thread while it
    waits for the daemon, and draws unless a draw is already under way (then that draw
    repeats itself). The screen is cleared first, because the terminal may have re-wrapped
    the old frame's lines, and the cursor-up count of an in-place redraw would be wrong.
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self._url = url
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._problem: str | None = None
        self._down_since: float | None = None
        self._drawing = False
        self._resized = False
        # auto_refresh off: redraws happen when the daemon reports something (and on the
        # slow uptime tick), never from rich's 4-per-second timer thread.
        self._live = Live(
            watch_screen(url, None, clock(), ""),
            console=console(),
            auto_refresh=False,
            transient=False,
        )
        self._live.start(refresh=True)
        self._previous_winch = on_resize(self._on_resize)

    def _on_resize(self, signum: int, frame: FrameType | None) -> None:
        self._resized = True
        if not self._drawing:
            self._draw()

    def _draw(self) -> None:
        self._drawing = True
        try:
            while True:
                if self._resized:
                    self._resized = False
                    self._live.console.clear()
                screen = watch_screen(
                    self._url, self._snapshot, self._clock(), self._problem, self._down_since
                )
                self._live.update(screen, refresh=True)
                if not self._resized:
                    break
        finally:
            self._drawing = False
        # A resize between the last check and here found a draw under way: draw again.
        if self._resized:
            self._draw()

    def show(self, snapshot: Snapshot) -> None:
        self._snapshot, self._problem, self._down_since = snapshot, None, None
        self._draw()

    def tick(self) -> None:
        self._draw()

    def reconnecting(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
        # Redraw only when there is something new to say, not on every retry.
        if reason != self._problem:
            self._problem = reason
            self._draw()

    def close(self) -> None:
        on_resize(self._previous_winch)
        self._live.stop()


ResizeHandler = Callable[[int, FrameType | None], Any] | int | None


def on_resize(handler: ResizeHandler) -> ResizeHandler:
    """Install a SIGWINCH handler; the one it replaces (None where signals are not ours:
    outside the main thread, or no SIGWINCH on this platform)."""
    winch = getattr(signal, "SIGWINCH", None)
    if (
        winch is None
        or handler is None
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    return signal.signal(winch, handler)


class PlainWatchView:
    """One line per change, for pipes and logs: engines, generation, connection."""

    def __init__(
        self, url: str, echo: Callable[[str], None], clock: Callable[[], float] = time.time
    ) -> None:
        self._url = url
        self._echo = echo
        self._clock = clock
        self._shown: dict[str, tuple[Any, ...]] = {}
        self._generation: Any = None
        self._connected = False
        self._ever_connected = False
        self._down_announced = False

    def _say(self, text: str) -> None:
        self._echo(f"{clock_text(self._clock())}  {text}")

    def show(self, snapshot: Snapshot) -> None:
        now = self._clock()
        rows = snapshot.rows()
        if not self._connected:
            verb = "reconnected to" if self._ever_connected else "watching"
            self._say(
                f"{verb} {self._url}: generation {snapshot.generation},"
                f" daemon pid {snapshot.daemon_pid}, {len(rows)} engine(s)"
            )
            self._connected = self._ever_connected = True
            self._down_announced = False
            self._generation = snapshot.generation
        elif snapshot.generation != self._generation:
            self._say(f"generation {snapshot.generation} (was {self._generation})")
            self._generation = snapshot.generation
        for row in rows:
            if self._shown.get(row.id) != row.key():
                self._say(row.line(now))
                self._shown[row.id] = row.key()
        present = {row.id for row in rows}
        for gone in [engine for engine in self._shown if engine not in present]:
            self._say(f"{gone}  removed")
            del self._shown[gone]

    def tick(self) -> None:
        # Uptime alone is not a change worth a line.
        return None

    def reconnecting(self, reason: str) -> None:
        self._connected = False
        # Once per outage: a log should not get a line per retry.
        if not self._down_announced:
            verb = "reconnecting" if self._ever_connected else "connecting"
            self._say(f"{verb} to {self._url}... ({reason})")
            self._down_announced = True

    def close(self) -> None:
        return None


class JsonWatchView:
    """One `/v1/status` answer per line on stdout whenever it changes (JSON lines);
    connection trouble goes to stderr so that stdout stays parseable."""

    def __init__(self, url: str, echo: Callable[[str], None], err: Callable[[str], None]) -> None:
        self._url = url
        self._echo = echo
        self._err = err
        self._last: str | None = None
        self._down = False
        self._ever_connected = False

    def show(self, snapshot: Snapshot) -> None:
        self._down = False
        self._ever_connected = True
        line = json.dumps(snapshot.status, default=str, separators=(",", ":"))
        if line != self._last:
            self._echo(line)
            self._last = line

    def tick(self) -> None:
        return None

    def reconnecting(self, reason: str) -> None:
        if not self._down:
            verb = "reconnecting" if self._ever_connected else "connecting"
            self._err(f"{verb} to {self._url}... ({reason})")
            self._down = True

    def close(self) -> None:
        return None


def watch_view(url: str, as_json: bool, echo: Callable[[str], None]) -> WatchView:
    """JSON lines with --json, a Live table on a terminal, plain lines otherwise."""
    if as_json:
        return JsonWatchView(url, echo, lambda text: print(text, file=sys.stderr, flush=True))
    if sys.stdout.isatty():
        return LiveWatchView(url)
    return PlainWatchView(url, echo)
