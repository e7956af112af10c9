"""A disaggregated engine as the processes that run it: ONE expansion, read by the loop, the
rollout review, status and the route table alike. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from sagellmd.desired import DesiredEngine, PdMember
from sagellmd.disaggregation import instance_spec, instances_of


def expand_engine(engine: DesiredEngine) -> list[DesiredEngine]:
    """The engine itself, or its prefill and decode instances (prefill first, by index)."""
    block = engine.spec.disaggregated
    if block is None:
        return [engine]
    expanded = []
    for instance in instances_of(engine.id, block):
        spec = replace(
            instance_spec(engine.spec, instance),
            disaggregated=None,
            pd_role=instance.role,
            pd_connector=block.connector,
        )
        member = PdMember(
            group=engine.id,
            role=instance.role,
            index=instance.index,
            connector=block.connector,
            threshold_input_tokens=block.threshold_input_tokens,
        )
        expanded.append(replace(engine, id=instance.instance_id, spec=spec, pd=member))
    return expanded


def expand_desired(engines: Iterable[DesiredEngine]) -> list[DesiredEngine]:
    """Every engine as the loop runs it: disaggregated ones replaced by their instances."""
    return [instance for engine in engines for instance in expand_engine(engine)]


def members_of(engines: Iterable[DesiredEngine], group: str) -> list[DesiredEngine]:
    """The instances of one disaggregated engine among expanded engines."""
    return [engine for engine in engines if engine.pd is not None and engine.pd.group == group]
