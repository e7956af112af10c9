"""`sagellm status --watch`: every engine, redrawn whenever the daemon records an event.

The loop long-polls `GET /v1/events?after=<cursor>&wait=<s>`; only an answer with events
makes it read `/v1/status` again and redraw. An empty answer (after `UPTIME_REFRESH_S`)
only recomputes the uptime column from what is already on screen, so an idle daemon costs
one request per `UPTIME_REFRESH_S`.

When the daemon cannot be reached (stopped, restarting, upgraded) the view says
"reconnecting to <url>..." and tries again every `RECONNECT_S`; once the daemon answers,
the event cursor is read afresh (a new daemon may have a new database) and the view
resumes. Three views share the loop: a rich Live table on a terminal, one plain line per
change otherwise, and one JSON status per line with `--json`.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from sagellmd.cli.client import ApiClient
from sagellmd.cli.columns import Column, FittedTable
from sagellmd.cli.interrupt import take_sigint
from sagellmd.cli.render import (
    cell,
    console,
    gpus_line,
    one_line_text,
    single_line,
    state_text,
)
from sagellmd.cli.waiting import next_cursor
from sagellmd.errors import DaemonUnreachableError, SagellmError

# Longest long-poll; an empty answer only refreshes the uptime column (not a data poll).
UPTIME_REFRESH_S = 5.0
# Between attempts while the daemon is unreachable: quick enough to notice a restart
# within about a second, slow enough to be no load.
RECONNECT_S = 1.0
# Recent events read at (re)connect, so LAST EVENT is filled in before anything happens.
SEED_EVENTS = 1000
# States in which an engine has a process whose age is worth showing.
RUNNING_STATES = frozenset({"starting", "ready", "unhealthy", "stopping"})
# The columns in order, and which give way first when the terminal is narrow (see
# sagellmd/cli/columns.py): ENGINE, STATE, PID and PORT are always shown whole; then LAST
# EVENT (the rest of the width, cut with an ellipsis), MODEL, RESTARTS, UPTIME, KIND,
# MEMORY, GPUS.
COLUMNS = (
    Column("ENGINE", 0, keep=True),
    Column("KIND", 5),
    Column("MODEL", 2, cut=True, min_width=10),
    Column("STATE", 0, keep=True),
    Column("PID", 0, keep=True, justify="right"),
    Column("PORT", 0, keep=True, justify="right"),
    Column("GPUS", 7),
    Column("MEMORY", 6, justify="right"),
    Column("RESTARTS", 3, justify="right"),
    Column("UPTIME", 4, justify="right"),
    Column("LAST EVENT", 1, cut=True, min_width=16),
)


def parse_ts(text: Any) -> float | None:
    """Epoch seconds of a daemon timestamp (`2026-01-02T03:04:05.123456Z`); None if absent."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def duration_text(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`, `4d03h`: short enough for a table column."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock_text(epoch: float) -> str:
    """Local wall-clock time of day, how a person reads "when"."""
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def event_text(event: Mapping[str, Any] | None) -> str:
    if not event:
        return "-"
    when = parse_ts(event.get("ts"))
    parts = [clock_text(when)] if when is not None else []
    parts.append(str(event.get("type") or "?"))
    if event.get("message"):
        parts.append(single_line(event["message"]))
    return " ".join(parts)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class WatchRow:
    """One engine of the watch view, from its `/v1/status` entry and its newest event."""

    id: str
    kind: str
    model: str
    state: str
    pid: int | None
    port: int | None
    gpus: tuple[int, ...]
    memory_gb: float | None
    restarts: int
    started_at: float | None
    last_event: str

    def uptime(self, now: float) -> str:
        if self.state not in RUNNING_STATES or self.pid is None or self.started_at is None:
            return "-"
        return duration_text(now - self.started_at)

    def gpus_text(self) -> str:
        return ",".join(map(str, self.gpus)) if self.gpus else "-"

    def memory_text(self) -> str:
        return "-" if self.memory_gb is None else f"{self.memory_gb:.1f} GiB"

    def key(self) -> tuple[Any, ...]:
        """Everything but the uptime: what makes a row "changed" for the plain view."""
        return (
            self.kind,
            self.model,
            self.state,
            self.pid,
            self.port,
            self.gpus,
            self.memory_gb,
            self.restarts,
            self.last_event,
        )

    def line(self, now: float) -> str:
        """The plain-text form: every column, labelled, on one line."""
        parts = [self.id, self.kind, self.model, self.state]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.port is not None:
            parts.append(f"port {self.port}")
        if self.gpus:
            parts.append(f"gpus {self.gpus_text()}")
        if self.memory_gb is not None:
            parts.append(self.memory_text())
        parts.append(f"restarts {self.restarts}")
        uptime = self.uptime(now)
        if uptime != "-":
            parts.append(f"up {uptime}")
        parts.append(f"last: {self.last_event}")
        return "  ".join(parts)


def watch_row(entry: Mapping[str, Any], last_event: Mapping[str, Any] | None) -> WatchRow:
    gpus = entry.get("gpus") if isinstance(entry.get("gpus"), list) else []
    memory = entry.get("gpu_memory_gb")
    return WatchRow(
        id=str(entry.get("id")),
        kind=str(entry.get("kind") or "-"),
        model=str(entry.get("model") or "-"),
        state=str(entry.get("state") or "unknown"),
        pid=_int(entry.get("pid")),
        port=_int(entry.get("port")),
        gpus=tuple(g for g in gpus if isinstance(g, int)),
        memory_gb=float(memory) if isinstance(memory, int | float) else None,
        restarts=_int(entry.get("restarts")) or 0,
        started_at=parse_ts(entry.get("started_at")),
        last_event=event_text(last_event),
    )


def remember(
    last_events: Mapping[str, Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The newest event of each engine, after `events` (oldest first, as the API sends them)."""
    merged = dict(last_events)
    for event in events:
        if event.get("engine"):
            merged[str(event["engine"])] = event
    return merged


@dataclass(frozen=True)
class Snapshot:
    """What the view shows: a status answer, the newest event per engine, the cursor."""

    status: Mapping[str, Any]
    cursor: int
    last_events: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # When the status was read (epoch seconds); the uptime tick does not change it.
    read_at: float = field(default_factory=time.time)

    @property
    def generation(self) -> Any:
        return self.status.get("generation", "?")

    @property
    def daemon_pid(self) -> Any:
        return (self.status.get("daemon") or {}).get("pid", "?")

    def rows(self) -> list[WatchRow]:
        return [
            watch_row(entry, self.last_events.get(str(entry.get("id"))))
            for entry in self.status.get("engines") or []
            if isinstance(entry, Mapping)
        ]


def watch_table(rows: Sequence[WatchRow], now: float, dim: bool = False) -> FittedTable:
    cells = [
        [
            cell(row.id),
            cell(row.kind),
            cell(row.model),
            state_text(row.state),
            cell(row.pid),
            cell(row.port),
            cell(row.gpus_text()),
            cell(row.memory_text()),
            cell(row.restarts),
            cell(row.uptime(now)),
            one_line_text(row.last_event),
        ]
        for row in rows
    ]
    return FittedTable(COLUMNS, cells, style="dim" if dim else "")


def watch_screen(
    url: str,
    snapshot: Snapshot | None,
    now: float,
    problem: str | None = None,
    down_since: float | None = None,
) -> RenderableType:
    """The whole Live screen: title with the generation, GPUs, the table and a footer."""
    if snapshot is None:
        title = Text(f"sagellm status --watch   {url}", style="bold")
        parts: list[RenderableType] = [title]
    else:
        title = Text(
            f"generation {snapshot.generation}   daemon pid {snapshot.daemon_pid}   {url}",
            style="bold",
        )
        parts = [title, Text(f"gpus: {gpus_line(snapshot.status.get('gpus'))}")]
        rows = snapshot.rows()
        if rows:
            parts.append(watch_table(rows, now, dim=problem is not None))
        else:
            parts.append(Text("no engines (start some with `sagellm preset set NAME`)"))
    if problem is not None or snapshot is None:
        verb = "connecting" if snapshot is None else "reconnecting"
        since = f" (since {clock_text(down_since)})" if down_since is not None else ""
        parts.append(Text(f"{verb} to {url}...{since}", style="bold yellow"))
        if problem:
            parts.append(Text(problem, style="dim"))
    else:
        parts.append(
            Text(
                f"status of {clock_text(snapshot.read_at)}, after event #{snapshot.cursor};"
                " redrawn on every event; Ctrl-C to exit",
                style="dim",
            )
        )
    return Group(*parts)


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


def connect(client: ApiClient) -> Snapshot:
    """Read the event cursor (and recent events), then the status.

    The cursor is read first: anything that happens between the two reads is after the
    cursor, so the next long-poll returns at once instead of the change being missed.
    """
    recent = client.get("/v1/events", {"limit": SEED_EVENTS}) or {}
    events = [e for e in recent.get("events") or [] if isinstance(e, Mapping)]
    cursor = next_cursor(0, recent)
    status = client.get("/v1/status") or {}
    return Snapshot(status, cursor, remember({}, events))


def transient(exc: SagellmError) -> bool:
    """Worth waiting out: the daemon is unreachable, or it answered 5xx.

    A daemon that is shutting down answers a long-poll still in flight with a 500 (see
    the report on the daemon's shutdown), so a 5xx is as much "restarting" as a refused
    connection. A 4xx (bad URL, token, request) is the user's to fix: it ends the watch.
    """
    return isinstance(exc, DaemonUnreachableError) or type(exc) is SagellmError


def run_watch(
    client: ApiClient,
    view: WatchView,
    refresh_s: float = UPTIME_REFRESH_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Follow the daemon until interrupted (KeyboardInterrupt is left to the caller)."""
    snapshot: Snapshot | None = None
    while True:
        try:
            if snapshot is None:
                snapshot = connect(client)
                view.show(snapshot)
            answer = client.events(after=snapshot.cursor, wait=refresh_s)
            events = [e for e in answer.get("events") or [] if isinstance(e, Mapping)]
            if not events:
                view.tick()
                continue
            cursor = next_cursor(snapshot.cursor, answer)
            status = client.get("/v1/status") or {}
            snapshot = Snapshot(status, cursor, remember(snapshot.last_events, events))
            view.show(snapshot)
        except SagellmError as exc:
            if not transient(exc):
                raise
            # Forget the cursor: the daemon that comes back may number events differently
            # (a restored or new database), and a stale cursor would never wake.
            snapshot = None
            view.reconnecting(exc.message)
            sleep(RECONNECT_S)


def watch_view(url: str, as_json: bool, echo: Callable[[str], None]) -> WatchView:
    """JSON lines with --json, a Live table on a terminal, plain lines otherwise."""
    if as_json:
        return JsonWatchView(url, echo, lambda text: print(text, file=sys.stderr, flush=True))
    if sys.stdout.isatty():
        return LiveWatchView(url)
    return PlainWatchView(url, echo)


def watch_status(client: ApiClient, as_json: bool, echo: Callable[[str], None]) -> None:
    """`sagellm status --watch`: runs until Ctrl-C, which ends it normally (exit 0)."""
    take_sigint()
    view = watch_view(client.base_url, as_json, echo)
    try:
        run_watch(client, view)
    except KeyboardInterrupt:
        return
    finally:
        view.close()
