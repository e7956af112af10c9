"""Following a preset change until its engines are ready, one has failed, or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sagellmd.cli.client import ApiClient
from sagellmd.cli.render import event_line

# Plan actions that start a new process: such an engine counts as ready only after a
# `ready` event newer than the change, so the old instance's `ready` cannot end the wait.
STARTING_ACTIONS = frozenset({"start", "replace", "restart", "recreate"})
POLL_S = 10.0


@dataclass(frozen=True)
class Rollout:
    """A preset change the daemon accepted: which generation and which engines it starts."""

    preset: str
    generation: int
    awaited: frozenset[str]

    @classmethod
    def from_answer(cls, preset: str, answer: Mapping[str, Any]) -> Rollout:
        awaited = frozenset(
            str(item["engine"])
            for item in answer.get("plan") or []
            if item.get("action") in STARTING_ACTIONS and item.get("engine")
        )
        return cls(preset, int(answer.get("generation") or 0), awaited)

    def owns(self, engine_id: Any) -> bool:
        return isinstance(engine_id, str) and engine_id.startswith(f"{self.preset}.")


@dataclass(frozen=True)
class Verdict:
    """`done` with `ok` true or false, or still waiting; `reason` says why, for the user."""

    done: bool
    ok: bool = False
    reason: str = ""


@dataclass
class Progress:
    """What the events since the change have shown so far."""

    ready_seen: set[str] = field(default_factory=set)
    failure: str | None = None


def note_events(rollout: Rollout, events: Iterable[Mapping[str, Any]], progress: Progress) -> None:
    """Fold events newer than the change into `progress`."""
    for event in events:
        kind = event.get("type")
        engine = event.get("engine")
        if rollout.owns(engine) and kind == "ready":
            progress.ready_seen.add(str(engine))
        elif rollout.owns(engine) and kind == "failed" and progress.failure is None:
            progress.failure = f"engine {engine} failed: {event.get('message') or 'no message'}"
        elif (kind == "generation" and "rollback" in str(event.get("message") or "").lower()
              and int(event.get("generation") or 0) > rollout.generation
              and progress.failure is None):
            progress.failure = f"the daemon rolled the change back: {event.get('message')}"


def judge(rollout: Rollout, status: Mapping[str, Any], progress: Progress) -> Verdict:
    """Decide from one status answer and the events so far whether the rollout is over."""
    if progress.failure:
        return Verdict(True, False, progress.failure)
    engines = [e for e in status.get("engines") or [] if e.get("preset") == rollout.preset]
    active = status.get("presets")
    newer = int(status.get("generation") or 0) > rollout.generation
    if newer and (not engines or (isinstance(active, list) and rollout.preset not in active)):
        return Verdict(True, False, (
            f"preset {rollout.preset} is no longer active at generation {status.get('generation')}"
            " (rolled back or unset meanwhile)"
        ))
    failed = [e for e in engines if e.get("state") == "failed"]
    if failed:
        return Verdict(True, False, "; ".join(
            f"engine {e.get('id')} failed: {e.get('message') or 'no message'}" for e in failed
        ))
    waiting = [
        e for e in engines
        if e.get("state") != "ready" or (e.get("id") in rollout.awaited
                                         and e.get("id") not in progress.ready_seen)
    ]
    if engines and not waiting:
        return Verdict(True, True, f"all {len(engines)} engine(s) of {rollout.preset} are ready")
    if not engines:
        return Verdict(False, reason=f"no engines of {rollout.preset} reported yet")
    return Verdict(False, reason=", ".join(
        f"{e.get('id')} {e.get('state')}" + (f" ({e['message']})" if e.get("message") else "")
        for e in waiting
    ))


def event_cursor(client: ApiClient) -> int:
    """The id of the newest event, so a follow-up sees exactly what happens after now."""
    answer = client.get("/v1/events", {"limit": 1}) or {}
    ids = [int(e["id"]) for e in answer.get("events") or [] if e.get("id") is not None]
    return int(answer.get("last_id") or max(ids, default=0))


def follow_rollout(
    client: ApiClient,
    rollout: Rollout,
    cursor: int,
    timeout_s: float,
    echo: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> Verdict:
    """Long-poll events (printing the preset's) and re-read status until a verdict is reached."""
    deadline = clock() + timeout_s
    progress = Progress()
    while True:
        verdict = judge(rollout, client.get("/v1/status") or {}, progress)
        if verdict.done:
            return verdict
        remaining = deadline - clock()
        if remaining <= 0:
            return Verdict(
                True, False, f"timed out after {timeout_s:g} s; waiting for: {verdict.reason}"
            )
        answer = client.events(after=cursor, wait=min(POLL_S, remaining))
        events = answer.get("events") or []
        for event in events:
            if rollout.owns(event.get("engine")) or event.get("type") == "generation":
                echo(event_line(event))
        note_events(rollout, events, progress)
        ids = [int(e["id"]) for e in events if e.get("id") is not None]
        cursor = max([cursor, *ids, int(answer.get("last_id") or 0)])
