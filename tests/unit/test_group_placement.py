"""Owns the tests of sagellmd/gpu/group_placement.py and sagellmd/reconcile/group_starts.py:
a disaggregated engine's instances on GPUs none of them share, placed or pending as one."""

from __future__ import annotations

from sagellmd.backoff import BackoffPolicy
from sagellmd.desired import DesiredEngine
from sagellmd.gpu.group_placement import GroupStart, place_group
from sagellmd.gpu.placement import GIB, GpuCapacity, NotPlaced, Placed, Reservation
from sagellmd.instance import Instance, InstanceState
from sagellmd.pd_expand import expand_desired
from sagellmd.reconcile.actions import Pend, Start, StartKind
from sagellmd.reconcile.plan import plan_actions
from sagellmd.spec import parse_engine
from tests.unit.test_gpus_for_starts import view

NOW = 10_000.0
POLICY = BackoffPolicy(base_s=2.0, max_s=60.0)
PREFILL, DECODE = "p.chat.prefill-0", "p.chat.decode-0"


def gpus(*sizes_gib: float) -> tuple[GpuCapacity, ...]:
    return tuple(GpuCapacity(index, int(size * GIB)) for index, size in enumerate(sizes_gib))


def starts(*members: tuple[str, int, float]) -> list[GroupStart]:
    return [GroupStart(engine_id, count, int(gib * GIB)) for engine_id, count, gib in members]


def test_no_two_instances_share_a_gpu_even_when_one_would_hold_both():
    placed = place_group(
        "p.chat", starts((PREFILL, 1, 10), (DECODE, 1, 10)), gpus(80, 80), [], 0.95
    )
    assert isinstance(placed, dict)
    assert {placed[PREFILL].gpus, placed[DECODE].gpus} == {(0,), (1,)}


def test_the_largest_instance_is_placed_first_so_a_small_one_does_not_take_its_gpu():
    # GPU1 alone holds the 60 GiB decode; best fit would give it to the prefill first.
    held = [Reservation("other", (0,), int(40 * GIB))]
    placed = place_group(
        "p.chat", starts((PREFILL, 1, 5), (DECODE, 1, 60)), gpus(80, 80, 80), held, 0.95
    )
    assert isinstance(placed, dict)
    assert placed[DECODE].gpus != placed[PREFILL].gpus
    assert 0 not in placed[DECODE].gpus


def test_too_few_gpus_for_the_set_is_one_reason_naming_the_instance_left_out():
    outcome = place_group(
        "p.chat",
        starts((PREFILL, 1, 10), (DECODE, 1, 10), ("p.chat.decode-1", 1, 10)),
        gpus(80, 80),
        [],
        0.95,
    )
    assert isinstance(outcome, NotPlaced) and not outcome.busy
    assert outcome.message == (
        "p.chat (prefill and decode instances never share a GPU) waits as one unit:"
        " p.chat.decode-1 needs 1 GPU no other instance of p.chat uses; 0 of 2 left"
    )


def test_memory_too_big_on_every_gpu_says_what_is_free():
    outcome = place_group(
        "p.chat", starts((PREFILL, 1, 10), (DECODE, 1, 200)), gpus(80, 80), [], 0.95
    )
    assert isinstance(outcome, NotPlaced)
    assert "p.chat.decode-0 needs 1 GPU x 200.0 GiB; GPU0 76.0 GiB free" in outcome.message


def test_a_restart_alone_avoids_the_gpus_its_siblings_hold():
    held = [Reservation(DECODE, (0,), int(10 * GIB))]
    placed = place_group(
        "p.chat", starts((PREFILL, 1, 10)), gpus(80, 80), held, 0.95, held={DECODE: (0,)}
    )
    assert placed == {PREFILL: Placed((1,), int(10 * GIB))}


def test_a_gpu_where_another_engine_starts_makes_the_set_wait_busy():
    outcome = place_group(
        "p.chat", starts((PREFILL, 1, 10), (DECODE, 1, 10)), gpus(80, 80), [], 0.95, busy={1}
    )
    assert isinstance(outcome, NotPlaced) and outcome.busy
    assert "waiting for the engine starting on GPU1" in outcome.message


def disaggregated(**block) -> list[DesiredEngine]:
    spec = parse_engine({"name": "chat", "model": "org/model", "disaggregated": block})
    return expand_desired([DesiredEngine("p.chat", "p", spec)])


def test_the_plan_places_the_set_together_or_pends_every_instance_with_one_reason():
    desired = disaggregated(decode={"gpu_memory_gb": 30})
    needs = {PREFILL: 10, DECODE: 30}
    plan = plan_actions(desired, {}, NOW, POLICY, view(80, 80, needs=needs))
    by_id = {action.engine_id: action for action in plan.actions}
    assert isinstance(by_id[PREFILL], Start) and isinstance(by_id[DECODE], Start)
    assert {by_id[PREFILL].gpus, by_id[DECODE].gpus} == {(0,), (1,)}
    assert by_id[DECODE].gpu_bytes == 30 * GIB

    # One GPU nearly full of another process: the decode alone would fit; nothing starts.
    full = view(80, 80, needs=needs, foreign_gib={0: 70})
    plan = plan_actions(desired, {}, NOW, POLICY, full)
    assert all(isinstance(action, Pend) for action in plan.actions)
    assert len({action.reason for action in plan.actions}) == 1


def test_a_crashed_instance_restarts_alone_on_a_gpu_its_sibling_does_not_hold():
    desired = disaggregated()
    prefill, decode = desired
    running = Instance(
        DECODE, 1, decode.spec.spec_hash, InstanceState.READY, pid=7, gpus=(0,), gpu_bytes=GIB
    )
    crashed = Instance(
        PREFILL,
        1,
        prefill.spec.spec_hash,
        InstanceState.BACKOFF,
        failures=1,
        exited_at=NOW - 60,
        gpus=(1,),
        gpu_bytes=GIB,
    )
    plan = plan_actions(
        desired,
        {DECODE: running, PREFILL: crashed},
        NOW,
        POLICY,
        view(80, 80, needs={PREFILL: 1, DECODE: 1}),
    )
    (action,) = plan.actions
    assert isinstance(action, Start) and action.kind is StartKind.RESTART
    assert action.engine_id == PREFILL and action.gpus == (1,)


def test_instance_specs_differ_by_role_and_connector_in_their_hash():
    prefill, decode = disaggregated()
    assert prefill.spec.pd_role == "prefill" and decode.spec.pd_role == "decode"
    assert prefill.spec.spec_hash != decode.spec.spec_hash
    assert prefill.pd is not None and prefill.pd.group == "p.chat"
    assert prefill.spec.disaggregated is None
