"""Judging a rollout: is the newest generation healthy, failed (and why), or in progress. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.actions import DesiredEngine

# Exits of a changed engine's new process that make a rollout fail ("crash-loops").
CRASH_LIMIT = 2


@dataclass(frozen=True)
class Verdict:
    healthy: bool | None  # None: still rolling out
    reason: str = ""
    engine: str | None = None
    deadline: float | None = None  # when to look again if nothing else happens


def changed_engines(desired: Iterable[DesiredEngine], before: Mapping[str, str]) -> list[str]:
    """Engines new in this generation or whose process-shaping spec changed."""
    return [engine.id for engine in desired if before.get(engine.id) != engine.spec.spec_hash]


def judge_rollout(
    started_at: float,
    desired: list[DesiredEngine],
    before: Mapping[str, str],
    instances: Mapping[str, Instance],
    now: float,
) -> Verdict:
    """The verdict on a generation made at `started_at`; `before` maps ids to old spec hashes.

    Healthy when every engine runs its current spec and is ready. Failed when an engine
    the change touched is not ready by its startup_timeout_s (counted from the change)
    or exited CRASH_LIMIT times.
    """
    ready = all(
        (instance := instances.get(engine.id)) is not None
        and instance.state is InstanceState.READY
        and instance.spec_hash == engine.spec.spec_hash
        for engine in desired
    )
    if ready:
        return Verdict(True, "all engines ready")
    deadlines = []
    by_id = {engine.id: engine for engine in desired}
    for engine_id in changed_engines(desired, before):
        spec = by_id[engine_id].spec
        instance = instances.get(engine_id)
        current = instance is not None and instance.spec_hash == spec.spec_hash
        if current and instance.state is InstanceState.READY:
            continue
        if current and instance.state is InstanceState.FAILED:
            return Verdict(False, f"{engine_id} failed: {instance.message}", engine_id)
        if current and instance.failures >= CRASH_LIMIT:
            return Verdict(
                False,
                f"{engine_id} exited {instance.failures} times: {instance.message}",
                engine_id,
            )
        deadline = started_at + spec.startup_timeout_s
        if now >= deadline:
            state = instance.state.value if instance else "not started"
            return Verdict(
                False,
                f"{engine_id} not ready within startup_timeout_s={spec.startup_timeout_s:g}"
                f" ({state})",
                engine_id,
            )
        deadlines.append(deadline)
    return Verdict(None, "rolling out", deadline=min(deadlines) if deadlines else None)
