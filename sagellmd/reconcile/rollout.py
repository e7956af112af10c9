"""Judging a rollout change by change: is each engine a generation changed ready, failed, or
still coming up; and what that makes of the generation. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sagellmd.engine_change import FAILED, HEALTHY, PENDING, EngineChange
from sagellmd.instance import Instance, InstanceState, describe_exit

# Exits of a changed engine's new process that make its change fail ("crash-loops").
CRASH_LIMIT = 2


@dataclass(frozen=True)
class Verdict:
    healthy: bool | None  # None: still rolling out
    reason: str = ""
    engine: str | None = None
    deadline: float | None = None  # when to look again if nothing else happens
    superseded_by: int | None = None  # later changes overtook it before it was judged

    @property
    def settled(self) -> bool:
        return self.healthy is not None or self.superseded_by is not None


def judge_change(
    engine_id: str,
    after_hash: str,
    started_at: float,
    startup_timeout_s: float,
    instance: Instance | None,
    now: float,
    min_healthy_s: float = 0.0,
) -> Verdict:
    """The verdict on one engine's change made at `started_at`, from its own instance only.

    Healthy once it runs the changed spec and stayed ready `min_healthy_s`; failed when
    that process failed,
    exited CRASH_LIMIT times, or is not ready `startup_timeout_s` after the change.
    """
    current = instance is not None and instance.spec_hash == after_hash
    if current and instance.state is InstanceState.IDLE:
        # Nobody asks for it (on demand, or idle_s passed): that must not hold the verdict
        # open; its first request starts it.
        return Verdict(True, f"{engine_id} idle ({instance.message})", engine_id)
    if current and instance.state is InstanceState.READY:
        # Ready is not enough: a process that dies a second after its first good health
        # check crash-loops, and that change must fail rather than pass.
        ready_at = instance.ready_at if instance.ready_at is not None else started_at
        steady_at = ready_at + min_healthy_s
        if now >= steady_at:
            return Verdict(True, f"{engine_id} ready", engine_id)
        return Verdict(None, f"{engine_id} ready, not yet steady", engine_id, steady_at)
    if current and instance.state is InstanceState.FAILED:
        return Verdict(False, f"{engine_id} failed: {instance.message}", engine_id)
    if current and instance.failures >= CRASH_LIMIT:
        last = describe_exit(instance.last_exit_code, instance.last_exit_signal)
        said = instance.message.partition("; it said: ")[2]
        return Verdict(
            False,
            f"{engine_id} exited {instance.failures} times (last: {last})"
            + (f"; it said: {said}" if said else ""),
            engine_id,
        )
    deadline = started_at + startup_timeout_s
    if now >= deadline:
        state = instance.state.value if current else "not started"
        pending = current and instance.state is InstanceState.PENDING
        detail = f": {instance.message}" if pending else ""
        return Verdict(
            False,
            f"{engine_id} not ready within startup_timeout_s={startup_timeout_s:g}"
            f" ({state}{detail})",
            engine_id,
        )
    state = instance.state.value if current else "not started"
    return Verdict(None, f"{engine_id} {state}", engine_id, deadline)


def judge_generation(changes: Iterable[EngineChange], verdicts: Mapping[int, Verdict]) -> Verdict:
    """A generation from its engines' changes; `verdicts` holds the ones decided this pass.

    Failed when a change of its own failed before anything overtook it; healthy when each
    change it made that needed a process came up (or there was none); superseded when later
    changes overtook all of those before they were judged; otherwise still rolling out.
    """
    failed, waiting, ready, superseded = [], [], [], []
    deadlines = []
    for change in changes:
        verdict = verdicts.get(change.id)
        state = change.verdict
        if verdict is not None and verdict.healthy is not None:
            state = HEALTHY if verdict.healthy else FAILED
        reason = verdict.reason if verdict is not None else change.reason
        if state == FAILED:
            failed.append((change.engine_id, reason))
        elif state == HEALTHY:
            ready.append(change.engine_id)
        elif state == PENDING and change.superseded_by is not None:
            superseded.append(change.superseded_by)
        elif state == PENDING:
            waiting.append(change.engine_id)
            if verdict is not None and verdict.deadline is not None:
                deadlines.append(verdict.deadline)
    if failed:
        return Verdict(False, "; ".join(reason for _, reason in failed), failed[0][0])
    if waiting:
        return Verdict(None, "rolling out", deadline=min(deadlines) if deadlines else None)
    if superseded and not ready:
        by = min(superseded)
        return Verdict(None, f"superseded by generation {by} before it was judged", None, None, by)
    if ready:
        named = ", ".join(ready[:4]) + (f" and {len(ready) - 4} more" if len(ready) > 4 else "")
        return Verdict(True, f"{named} ready")
    return Verdict(True, "nothing to start")
