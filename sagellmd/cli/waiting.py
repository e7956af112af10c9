"""Following a generation until the daemon judges it: healthy, failed (rolled back or kept),
superseded (its engines changed again before a verdict), or out of time.

The daemon decides whether a generation is healthy (docs/api.md, "Changes, dry runs and
rollouts"); the CLI only reads that verdict. The pure functions here take plain answers and
an injected time, so they are tested without a daemon; `follow_generation` is the loop that
feeds them from the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sagellmd.cli.client import ApiClient
from sagellmd.cli.render import plan_engine
from sagellmd.engine_change import SUPERSEDED
from sagellmd.instance import InstanceState

# Longest single long-poll: events wake it early; this only bounds a silent daemon.
POLL_S = 10.0
# The daemon commits a failed verdict and the rollback generation one right after the
# other; seeing the first without the second for longer than this means it made none.
ROLLBACK_GRACE_S = 5.0
# While waiting out that gap, look again this often (the rollback's own event wakes us too).
RECHECK_S = 1.0


@dataclass(frozen=True)
class EngineRow:
    """One engine of the progress view, from a `/v1/status` entry."""

    id: str
    state: str
    pid: int | None = None
    port: int | None = None
    gpus: tuple[int, ...] = ()
    restarts: int = 0
    message: str = ""
    # Ready with the desired spec (or removed, for an engine the change drops).
    settled: bool = False

    def line(self) -> str:
        """The plain-text form, printed when stdout is not a terminal."""
        if self.state == "removed":
            return f"{self.id}  removed"
        parts = [self.id, self.state]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.port is not None:
            parts.append(f"port {self.port}")
        if self.gpus:
            parts.append("gpus " + ",".join(map(str, self.gpus)))
        parts.append(f"restarts {self.restarts}")
        if self.message:
            parts.append(self.message)
        return "  ".join(parts)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def engine_row(engine_id: str, entry: Mapping[str, Any] | None) -> EngineRow:
    """The row of one engine; an engine missing from status has been removed."""
    if entry is None:
        return EngineRow(engine_id, "removed", settled=True)
    state = str(entry.get("state") or "unknown")
    desired = entry.get("desired", True) is not False
    # An engine still running an older spec shows `ready` until the loop replaces it.
    wanted, running = entry.get("spec_hash"), entry.get("running_spec_hash")
    current = wanted is None or running is None or wanted == running
    gpus = entry.get("gpus") if isinstance(entry.get("gpus"), list) else []
    return EngineRow(
        id=engine_id,
        state=state,
        pid=_int_or_none(entry.get("pid")),
        port=_int_or_none(entry.get("port")),
        gpus=tuple(g for g in gpus if isinstance(g, int)),
        restarts=_int_or_none(entry.get("restarts")) or 0,
        message=str(entry.get("message") or ""),
        # An idle engine (on demand) is where a change leaves it: its first request starts it.
        settled=desired and state in (InstanceState.READY, InstanceState.IDLE) and current,
    )


def watched_engines(record: Mapping[str, Any], plan: Sequence[Mapping[str, Any]]) -> list[str]:
    """The generation's engines, then engines its plan touches that it no longer has."""
    ids = [
        str(e["id"]) for e in record.get("engines") or [] if isinstance(e, Mapping) and e.get("id")
    ]
    for item in plan:
        engine = plan_engine(item)
        if engine and engine not in ids:
            ids.append(engine)
    return ids


def engine_rows(status: Mapping[str, Any], engine_ids: Sequence[str]) -> list[EngineRow]:
    by_id = {str(e.get("id")): e for e in status.get("engines") or [] if isinstance(e, Mapping)}
    return [engine_row(engine_id, by_id.get(engine_id)) for engine_id in engine_ids]


def changed_rows(shown: Mapping[str, EngineRow], rows: Sequence[EngineRow]) -> list[EngineRow]:
    """The rows that differ from what was shown last (the plain view prints only those)."""
    return [row for row in rows if shown.get(row.id) != row]


def waiting_for(rows: Sequence[EngineRow]) -> str:
    """`p.chat starting (message), ...` for the engines that are not settled yet."""
    pending = [row for row in rows if not row.settled]
    if not pending:
        return "the daemon's verdict"
    return ", ".join(
        f"{row.id} {row.state}" + (f" ({row.message})" if row.message else "") for row in pending
    )


@dataclass(frozen=True)
class Window:
    """When the wait began and how long it may last (clock seconds, injected)."""

    started: float
    timeout_s: float

    def remaining(self, now: float) -> float:
        return self.started + self.timeout_s - now


@dataclass(frozen=True)
class Outcome:
    """The end of a wait (`done`), or what it is still waiting for (`reason`)."""

    done: bool
    ok: bool = False
    reason: str = ""
    rollback: int | None = None  # the generation the daemon made to undo the failed one
    reverted: tuple[str, ...] = ()  # the engines that rollback put back as they were
    kept: bool = False  # failed, and left as it is because its rollback was off
    timed_out: bool = False
    removal_only: bool = False  # healthy, and all it watched was engines leaving


def rollback_record(
    generation: int, history: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The generation whose cause is `rollback of N: ...` (the daemon's automatic rollback)."""
    prefix = f"rollback of {generation}:"
    return next((g for g in history if str(g.get("cause") or "").startswith(prefix)), None)


def reverted_engines(record: Mapping[str, Any]) -> list[str]:
    """The engines a revert generation put back (its `changes`)."""
    return [str(change.get("engine")) for change in record.get("changes") or []]


def _member_ids(record: Mapping[str, Any]) -> set[str]:
    engines = record.get("engines") or []
    return {str(e["id"]) for e in engines if isinstance(e, Mapping) and e.get("id")}


def _ids(rows: Sequence[EngineRow]) -> set[str]:
    return {row.id for row in rows}


def judge(
    record: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    rows: Sequence[EngineRow],
    window: Window,
    now: float,
    failed_seen_at: float | None = None,
) -> Outcome:
    """Decide from one round of answers whether the wait for `record` is over.

    The daemon judges every generation on the engines it changed, newer generations
    notwithstanding; a failed one is followed by its rollback generation (cause
    `rollback of N: ...`), which `history` (`/v1/generations`, newest first, fetched once
    the generation failed) holds.
    """
    number = int(record.get("id") or 0)
    healthy = record.get("healthy")
    verdict = str(record.get("verdict") or "no verdict given")
    if healthy is True:
        healthy_text = f"generation {number} is healthy: {verdict}"
        # The daemon judges a generation by its own engines; the engines the change
        # removes may still be stopping, and "done" must mean they are gone too.
        members = _member_ids(record)
        removed = [row for row in rows if row.id not in members]
        leaving = [row for row in removed if not row.settled]
        if not leaving:
            if removed:
                healthy_text += "; " + ", ".join(f"{row.id} stopped" for row in removed)
            return Outcome(True, True, healthy_text, removal_only=not members & _ids(rows))
        if window.remaining(now) <= 0:
            return Outcome(
                True,
                False,
                f"timed out after {window.timeout_s:g} s; {healthy_text}, but still"
                f" waiting for: {waiting_for(leaving)}",
                timed_out=True,
            )
        return Outcome(False, reason=f"{healthy_text}; waiting for: {waiting_for(leaving)}")
    if healthy is False:
        failure = f"generation {number} failed: {verdict}"
        undo = rollback_record(number, history)
        if undo is not None:
            return Outcome(
                True,
                False,
                failure,
                rollback=int(undo.get("id") or 0),
                reverted=tuple(reverted_engines(undo)),
            )
        if record.get("auto_rollback") is False:
            return Outcome(True, False, failure, kept=True)
        if failed_seen_at is not None and now - failed_seen_at >= ROLLBACK_GRACE_S:
            return Outcome(True, False, f"{failure}; the daemon made no rollback generation")
        return Outcome(False, reason=f"{failure}; waiting for the daemon's rollback")
    if record.get("state") == SUPERSEDED:
        # Every engine it changed was changed again before its verdict (docs/presets.md).
        return Outcome(True, False, f"generation {number} was {verdict}")
    if window.remaining(now) <= 0:
        return Outcome(
            True,
            False,
            f"timed out after {window.timeout_s:g} s; waiting for: {waiting_for(rows)}",
            timed_out=True,
        )
    return Outcome(False, reason=f"rolling out; waiting for: {waiting_for(rows)}")


def outcome_lines(outcome: Outcome, kept_note: str = "rollback off") -> list[str]:
    """What the user reads at the end of a failed wait, after the reason itself."""
    if outcome.rollback is not None:
        engines = f" ({', '.join(outcome.reverted)})" if outcome.reverted else ""
        return [
            f"the daemon rolled it back: generation {outcome.rollback} undoes this"
            f" change{engines}; changes made since stay"
        ]
    if outcome.kept:
        return [f"the failed state is kept as it is ({kept_note}); `sagellm rollback` undoes it"]
    if outcome.timed_out:
        return ["the rollout goes on in the daemon; `sagellm history` shows its verdict"]
    return []


class ProgressView(Protocol):
    """Where the wait shows the engines: a live table on a terminal, lines otherwise."""

    def update(self, rows: Sequence[EngineRow], note: str) -> None: ...

    def close(self) -> None: ...


def event_cursor(client: ApiClient) -> int:
    """The id of the newest event, so a follow-up wakes for exactly what happens after now."""
    answer = client.get("/v1/events", {"limit": 1}) or {}
    ids = [int(e["id"]) for e in answer.get("events") or [] if e.get("id") is not None]
    return int(answer.get("last_id") or max(ids, default=0))


def next_cursor(cursor: int, answer: Mapping[str, Any]) -> int:
    ids = [int(e["id"]) for e in answer.get("events") or [] if e.get("id") is not None]
    return max([cursor, int(answer.get("last_id") or 0), *ids])


def follow_generation(
    client: ApiClient,
    generation: int,
    plan: Sequence[Mapping[str, Any]],
    cursor: int,
    timeout_s: float,
    view: ProgressView,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Redraw the engines on every event (long-poll) until `judge` reaches an outcome."""
    window = Window(clock(), timeout_s)
    failed_seen_at: float | None = None
    while True:
        status = client.get("/v1/status") or {}
        record = client.get(f"/v1/generations/{generation}") or {}
        current = int(status.get("generation") or 0)
        history: list[Mapping[str, Any]] = []
        if record.get("healthy") is False:
            # Enough to reach the rollback generation, which is newer.
            answer = client.get("/v1/generations", {"limit": min(1000, current + 1)}) or {}
            history = list(answer.get("generations") or [])
        rows = engine_rows(status, watched_engines(record, plan))
        now = clock()
        if record.get("healthy") is False and failed_seen_at is None:
            failed_seen_at = now
        outcome = judge(record, history, rows, window, now, failed_seen_at)
        # A finished wait's reason is printed once, below the view, by the caller.
        view.update(rows, "" if outcome.done else outcome.reason)
        if outcome.done:
            return outcome
        wait = min(POLL_S, window.remaining(now))
        if failed_seen_at is not None:
            wait = min(wait, RECHECK_S)
        cursor = next_cursor(cursor, client.events(after=cursor, wait=max(wait, 0.1)))
