"""The rollout verdict on a change of a disaggregated engine: its instances judged each as an
engine (rollout.judge_change), the set healthy only when all are. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from sagellmd.desired import DesiredEngine
from sagellmd.instance import Instance
from sagellmd.pd_expand import expand_engine
from sagellmd.reconcile.rollout import Verdict, judge_change


def judge_set(
    engine: DesiredEngine,
    started_at: float,
    instances: Mapping[str, Instance],
    now: float,
    min_healthy_s: float = 0.0,
) -> Verdict:
    """Failed as soon as one instance failed; healthy once every instance is; else waiting
    (until the earliest instance deadline)."""
    verdicts = [
        judge_change(
            member.id,
            member.spec.spec_hash,
            started_at,
            member.spec.startup_timeout_s,
            instances.get(member.id),
            now,
            min_healthy_s,
        )
        for member in expand_engine(engine)
    ]
    failed = [v for v in verdicts if v.healthy is False]
    if failed:
        return Verdict(False, "; ".join(v.reason for v in failed), engine.id)
    waiting = [v for v in verdicts if v.healthy is None]
    if waiting:
        deadlines = [v.deadline for v in waiting if v.deadline is not None]
        reason = ", ".join(v.reason for v in waiting)
        return Verdict(None, reason, engine.id, min(deadlines) if deadlines else None)
    return Verdict(True, f"{engine.id} ready ({', '.join(v.reason for v in verdicts)})", engine.id)
