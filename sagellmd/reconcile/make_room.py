"""Making room on the GPUs for an engine requests wait for: which idle-able engines a start
on demand (or a wake) evicts, as gpu/eviction.py chooses them. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from sagellmd.desired import DesiredEngine
from sagellmd.gpu.eviction import Eviction, EvictionCandidate, choose_evictions
from sagellmd.gpu.placement import GpuView, Placed, Reservation
from sagellmd.instance import Instance, InstanceState, StopIntent
from sagellmd.reconcile.actions import Action, Pend, Sleep, Stop, Wait
from sagellmd.reconcile.demand import Activity, last_used

ROOM_INTENTS = (StopIntent.IDLE, StopIntent.SLEEP)


@dataclass
class Room:
    """The engines a demanded start may evict this pass; each is evicted once at most."""

    candidates: tuple[EvictionCandidate, ...] = ()
    sleepers: frozenset[str] = frozenset()
    # Engines on their way to idle whose memory is not free yet.
    leaving: tuple[str, ...] = ()
    taken: set[str] = field(default_factory=set)

    def evict_for(
        self,
        engine_id: str,
        count: int,
        per_gpu_bytes: int,
        view: GpuView,
        reservations: Sequence[Reservation],
        starting: Collection[int],
    ) -> Placed | list[Action]:
        """Where it goes at once, or the evictions to make and the engine's pending reason."""
        if self.leaving:
            names = ", ".join(self.leaving)
            return [Pend(engine_id, f"making room: waiting for {names} to release GPU memory")]
        pool = [c for c in self.candidates if c.engine_id not in self.taken]
        outcome = choose_evictions(count, per_gpu_bytes, view, reservations, pool, starting)
        if not isinstance(outcome, Eviction):
            return [Pend(engine_id, outcome.message)]
        if not outcome.evict:
            return outcome.placed
        self.taken.update(outcome.evict)
        reason = f"idle: evicted to make room for {engine_id}"
        evictions: list[Action] = [
            Sleep(victim, reason)
            if victim in self.sleepers
            else Stop(victim, reason, StopIntent.IDLE)
            for victim in outcome.evict
        ]
        names = ", ".join(outcome.evict)
        return [*evictions, Pend(engine_id, f"making room: evicting {names}")]


def eviction_candidates(
    actions: Sequence[Action],
    desired: Sequence[DesiredEngine],
    observed: Mapping[str, Instance],
    activity: Activity | None,
) -> Room | None:
    """Ready idle-able engines holding GPUs and nothing else to do this pass; None without a
    fresh gateway report (then nobody can say who is busy, so nothing is evicted)."""
    if activity is None:
        return None
    acting = {action.engine_id for action in actions if not isinstance(action, Wait)}
    specs = {engine.id: engine.spec for engine in desired}
    candidates = []
    for engine_id, instance in observed.items():
        spec = specs.get(engine_id)
        if (
            spec is None
            or not spec.idle_able
            or engine_id in acting
            or instance.state is not InstanceState.READY
            or instance.retiring is not None
            or not instance.holds_gpus
        ):
            continue
        load = activity.load(engine_id)
        candidates.append(EvictionCandidate(engine_id, True, load.busy, last_used(instance, load)))
    sleepers = frozenset(
        c.engine_id for c in candidates if specs[c.engine_id].idle_action == "sleep"
    )
    leaving = tuple(
        sorted(
            engine_id
            for engine_id, instance in observed.items()
            if instance.state is InstanceState.STOPPING
            and instance.stop_intent in ROOM_INTENTS
            and instance.holds_gpus
        )
    )
    return Room(tuple(candidates), sleepers, leaving)
