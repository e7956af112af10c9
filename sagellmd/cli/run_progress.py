"""The wait of `sagellm run`: one progress line (the engine's state and the daemon's message),
driven by the daemon's event long-poll, until the engine can take the request.

On a terminal the line is redrawn in place on stderr (with the seconds waited, ticking once a
second); elsewhere each change is one line of its own. stdout carries only the answer.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from sagellmd.cli.client import ApiClient
from sagellmd.errors import SagellmError

# One long-poll at most this long, so the seconds on the line tick.
TICK_S = 1
# States in which a request may be sent: the engine answers it, or the gateway holds it and
# the daemon starts (or wakes) the engine for it.
SERVING = "ready"
IDLE = "idle"
# The first start failed: the daemon retries (backoff) or has given up (failed).
FAILED_STATES = frozenset({"failed", "backoff"})
REMOVED = "removed"


class ProgressLine:
    """One status line on stderr: redrawn in place on a terminal, else printed per change."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._lock = threading.Lock()
        self._shown = ""  # what the last plain line said (without the seconds)
        self._drawn = False
        self._closed = False

    def show(self, text: str, seconds: float) -> None:
        with self._lock:
            if self._closed:
                return
            if self._tty:
                self._stream.write(f"\r\x1b[K{text}  {seconds:.0f} s")
                self._drawn = True
            elif text != self._shown:
                self._stream.write(f"{text}\n")
            self._shown = text
            self._stream.flush()

    def clear(self, close: bool = False) -> None:
        """Take the line off the screen (before the answer is printed where it was); once
        closed, a late redraw from a watching thread draws nothing."""
        with self._lock:
            self._closed = self._closed or close
            if self._drawn:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
                self._drawn = False


@dataclass(frozen=True)
class EngineView:
    """What the wait knows of one engine, from its `/v1/status` entry."""

    id: str
    state: str
    message: str
    current: bool  # running its desired spec (or not running at all)

    @property
    def can_serve(self) -> bool:
        return (self.state == SERVING and self.current) or self.state == IDLE

    def text(self) -> str:
        return f"{self.id}: {self.state}" + (f" ({self.message})" if self.message else "")


def engine_views(status: Mapping[str, Any], engine_ids: Sequence[str]) -> list[EngineView]:
    by_id = {str(e.get("id")): e for e in status.get("engines") or [] if isinstance(e, Mapping)}
    views = []
    for engine_id in engine_ids:
        entry = by_id.get(engine_id)
        if entry is None:
            views.append(EngineView(engine_id, REMOVED, "no longer declared", False))
            continue
        wanted, running = entry.get("spec_hash"), entry.get("running_spec_hash")
        views.append(
            EngineView(
                engine_id,
                str(entry.get("state") or "unknown"),
                str(entry.get("message") or ""),
                wanted is None or running is None or wanted == running,
            )
        )
    return views


def failure(views: Sequence[EngineView], exits: Mapping[str, str]) -> str | None:
    """Why the wait is over without an engine: every engine failed its start (or is gone)."""
    if not views or any(v.state not in FAILED_STATES and v.state != REMOVED for v in views):
        return None
    reasons = []
    for view in views:
        why = exits.get(view.id) or view.message or "no message"
        if view.state == REMOVED:
            # A failed generation's rollback removes the engine that change declared.
            reasons.append(
                f"{view.id}: {exits.get(view.id) or 'removed'}; the daemon rolled"
                " back the change that declared it"
            )
        else:
            reasons.append(f"{view.id} {view.state}: {why}")
    return "; ".join(reasons)


class EngineWatch:
    """Follows engines on the daemon's events; each `step` redraws the line once."""

    def __init__(
        self,
        api: ApiClient,
        engine_ids: Sequence[str],
        line: ProgressLine,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.engine_ids = list(engine_ids)
        self.line = line
        self.clock = clock
        self.started = clock()
        answer = api.get("/v1/events", {"limit": 1}) or {}
        self.cursor = int(answer.get("last_id") or 0)
        # The latest exit (or refused start) of each engine, the reason a failure prints.
        self.exits: dict[str, str] = {}

    def look(self, draw: bool = True) -> list[EngineView]:
        views = engine_views(self.api.get("/v1/status") or {}, self.engine_ids)
        if draw:
            self.line.show(", ".join(v.text() for v in views), self.clock() - self.started)
        return views

    def wait_events(self, seconds: float = TICK_S) -> None:
        answer = self.api.events(after=self.cursor, wait=seconds)
        for event in answer.get("events") or []:
            self.cursor = max(self.cursor, int(event.get("id") or 0))
            message = str(event.get("message") or "")
            if event.get("engine") in self.engine_ids and (
                event.get("type") in ("exited", "failed") or message.startswith("cannot start")
            ):
                self.exits[str(event["engine"])] = message or str(event.get("type"))
        self.cursor = max(self.cursor, int(answer.get("last_id") or 0))

    def until_serving(self, timeout_s: float) -> EngineView:
        """The first engine that can take a request; SagellmError if none can, in time.
        An engine that can at once is not worth a line."""
        views = self.look(draw=False)
        shown = False
        while True:
            serving = next((v for v in views if v.can_serve), None)
            if serving is not None and not shown:
                return serving
            self.line.show(", ".join(v.text() for v in views), self.clock() - self.started)
            shown = True
            if serving is not None:
                return serving
            reason = failure(views, self.exits)
            if reason is not None:
                raise start_failed(reason, self.engine_ids)
            if self.clock() - self.started >= timeout_s:
                waiting = ", ".join(v.text() for v in views)
                raise SagellmError(f"not ready within {timeout_s:g} s: {waiting}")
            self.wait_events()
            views = self.look(draw=False)


def start_failed(reason: str, engine_ids: Sequence[str]) -> SagellmError:
    first = engine_ids[0] if engine_ids else "ENGINE"
    return SagellmError(
        f"the engine failed to start: {reason}. `sagellm engine logs {first}` shows its log"
    )


class BackgroundWatch:
    """The progress line while a request waits in the gateway for an idle engine to start:
    a thread redraws it until the answer's first piece; a failed start ends the wait."""

    def __init__(self, watch: EngineWatch, on_failure: Callable[[], None]) -> None:
        self.watch = watch
        self.on_failure = on_failure
        self.failed: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                views = self.watch.look()
                if any(v.state == SERVING for v in views):
                    return
                reason = failure(views, self.watch.exits)
                if reason is not None:
                    # Never after stop(): the interrupt must land in the wait for the answer.
                    with self._lock:
                        if not self._stop.is_set():
                            self.failed = reason
                            self.on_failure()
                    return
                self.watch.wait_events()
        except SagellmError:
            return  # the request itself reports an unreachable daemon, if it matters

    def stop(self) -> None:
        """The answer has begun (or ended): the line goes away for good."""
        with self._lock:
            self._stop.set()
        self.watch.line.clear(close=True)

    def __exit__(self, *exc: object) -> None:
        self.stop()
