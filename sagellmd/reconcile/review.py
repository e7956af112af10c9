"""Reviewing open generations: judge each engine change on its own instance, settle the
generations, and revert a failed one's own changes (docs/presets.md, "Rollouts")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sagellmd.desired import DesiredEngine
from sagellmd.engine_change import FAILED, HEALTHY
from sagellmd.instance import Instance
from sagellmd.reconcile.rollout import Verdict, judge_change, judge_generation
from sagellmd.reconcile.rollout_set import judge_set
from sagellmd.store.generations import Settlement
from sagellmd.store.repository import Store


@dataclass(frozen=True)
class RolloutOutcome:
    """What one review decided about one generation."""

    generation: int
    verdict: Verdict
    reverted_by: int | None = None  # the generation that undid its changes
    reverted: tuple[str, ...] = ()  # the engines that generation put back
    kept: bool = False  # failed, and left as it is (rollback off)


def review(
    store: Store,
    instances: Mapping[str, Instance],
    now: float,
    min_healthy_s: float = 0.0,
    desired_engines: list[DesiredEngine] | None = None,
) -> list[RolloutOutcome]:
    """Judge every generation still without a verdict, oldest first; revert failed ones.

    Returns one outcome per open generation: settled now, or still rolling out with the
    deadline at which to look again (`next_deadline`). Verdicts go to the store in one
    commit (each one a fsync otherwise), flushed before a revert so that a generation is
    marked failed before the generation that undoes it exists.
    """
    outcomes: list[RolloutOutcome] = []
    pending: list[Settlement] = []
    desired = {
        e.id: e for e in (desired_engines if desired_engines is not None else store.desired())
    }
    for generation in store.open_generations():
        decided: dict[int, Verdict] = {}
        for change in generation.changes:
            if not change.open or change.after_hash is None:
                continue
            engine = desired.get(change.engine_id)
            if engine is None or engine.spec.spec_hash != change.after_hash:
                continue  # changed since without a record (cannot happen); nothing to judge
            if engine.spec.disaggregated is not None:
                # The change is the declared engine's; its instances carry it out.
                decided[change.id] = judge_set(engine, generation.ts, instances, now, min_healthy_s)
                continue
            decided[change.id] = judge_change(
                change.engine_id,
                change.after_hash,
                generation.ts,
                engine.spec.startup_timeout_s,
                instances.get(change.engine_id),
                now,
                min_healthy_s,
            )
        verdict = judge_generation(generation.changes, decided)
        settled_changes = {
            change_id: (HEALTHY if v.healthy else FAILED, v.reason)
            for change_id, v in decided.items()
            if v.healthy is not None
        }
        if not verdict.settled:
            pending.append(Settlement(generation.id, settled_changes))
            outcomes.append(RolloutOutcome(generation.id, verdict))
            continue
        pending.append(Settlement(generation.id, settled_changes, verdict.healthy, verdict.reason))
        if verdict.healthy is not False:
            outcomes.append(RolloutOutcome(generation.id, verdict))
            continue
        if not generation.auto_rollback:
            outcomes.append(RolloutOutcome(generation.id, verdict, kept=True))
            continue
        store.settle(pending)
        pending = []
        cause = f"rollback of {generation.id}: {verdict.reason}"
        undo = store.revert_generation(generation.id, cause)
        outcomes.append(RolloutOutcome(generation.id, verdict, undo.generation, undo.changed))
        # The revert changed the desired set: what is left open is judged against it.
        desired = {engine.id: engine for engine in undo.desired}
    store.settle(pending)
    return outcomes


def next_deadline(outcomes: list[RolloutOutcome]) -> float | None:
    """When to look again if nothing else happens: the earliest open deadline."""
    deadlines = [o.verdict.deadline for o in outcomes if o.verdict.deadline is not None]
    return min(deadlines) if deadlines else None
