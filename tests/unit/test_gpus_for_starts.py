"""Owns the tests of sagellmd/reconcile/gpus_for_starts.py, through `plan_actions(..., gpus=)`."""

from __future__ import annotations

import pytest

from sagellmd.backoff import BackoffPolicy
from sagellmd.desired import DesiredEngine
from sagellmd.gpu.placement import GIB, GpuCapacity, GpuView
from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.actions import Pend, Replace, Start, StartKind, Wait
from sagellmd.reconcile.plan import plan_actions
from sagellmd.spec import parse_engine

NOW = 10_000.0
POLICY = BackoffPolicy(base_s=2.0, max_s=60.0)


def engine(name: str, model: str = "org/model", **fields) -> DesiredEngine:
    return DesiredEngine(name, None, parse_engine({"name": name, "model": model, **fields}))


def view(
    *sizes_gib: float,
    needs: dict[str, float | str],
    headroom: float = 0.95,
    foreign_gib: dict[int, float] | None = None,
    message: str = "",
) -> GpuView:
    foreign = foreign_gib or {}
    return GpuView(
        gpus=tuple(
            GpuCapacity(index, int(size * GIB), int(foreign.get(index, 0) * GIB))
            for index, size in enumerate(sizes_gib)
        ),
        headroom=headroom,
        message=message or f"simulated GPUs: {len(sizes_gib)}",
        needs={
            engine_id: need if isinstance(need, str) else int(need * GIB)
            for engine_id, need in needs.items()
        },
    )


def instance(
    desired: DesiredEngine,
    state: InstanceState,
    gpus: tuple[int, ...] = (),
    gpu_gib: float = 0,
    **fields,
) -> Instance:
    values = dict(
        engine_id=desired.id,
        generation=1,
        spec_hash=desired.spec.spec_hash,
        state=state,
        pid=4242 if state in (InstanceState.STARTING, InstanceState.READY) else None,
        port=20000,
        started_at=NOW - 10,
        gpus=gpus,
        gpu_bytes=int(gpu_gib * GIB),
    )
    values.update(fields)
    return Instance(**values)


def plan(desired, observed, gpus: GpuView, now: float = NOW):
    observed_by_id = {item.engine_id: item for item in observed}
    return list(plan_actions(desired, observed_by_id, now, POLICY, gpus=gpus).actions)


# -- one engine ----------------------------------------------------------------------


def test_a_start_gets_its_gpus_and_bytes():
    chat = engine("chat")

    actions = plan([chat], [], view(80, 24, needs={"chat": 20}))

    # Best fit: the 24 GiB GPU (22.8 GiB under headroom) is the tightest that fits.
    assert actions == [Start(chat, "new engine", gpus=(1,), gpu_bytes=20 * GIB)]


def test_tensor_parallel_start_gets_distinct_gpus():
    chat = engine("chat", tensor_parallel=2, pipeline_parallel=2)

    actions = plan([chat], [], view(80, 80, 80, 80, needs={"chat": 30}))

    assert actions == [Start(chat, "new engine", gpus=(0, 1, 2, 3), gpu_bytes=30 * GIB)]


def test_an_engine_that_does_not_fit_pends_with_the_numbers():
    chat = engine("chat", tensor_parallel=2)
    gpus = view(80, 80, needs={"chat": 17.3}, headroom=0.5, foreign_gib={0: 30.9})

    actions = plan([chat], [], gpus)

    assert actions == [
        Pend("chat", "needs 2 GPUs x 17.3 GiB; GPU0 9.1 GiB free, GPU1 40.0 GiB free")
    ]


def test_a_pending_engine_starts_once_memory_frees_up():
    chat = engine("chat")
    pending = instance(chat, InstanceState.PENDING, message="needs 1 GPU x 40.0 GiB; ...")

    still = plan([chat], [pending], view(80, needs={"chat": 40}, foreign_gib={0: 50}))
    freed = plan([chat], [pending], view(80, needs={"chat": 40}))

    assert [type(action) for action in still] == [Pend]
    assert freed == [
        Start(chat, "retry: needs 1 GPU x 40.0 GiB; ...", gpus=(0,), gpu_bytes=40 * GIB)
    ]


# -- one start at a time per GPU ------------------------------------------------------


def test_two_new_engines_on_one_gpu_start_one_after_the_other():
    first, second = engine("alpha"), engine("beta")

    actions = plan([first, second], [], view(80, needs={"alpha": 30, "beta": 30}))

    assert actions == [
        Start(first, "new engine", gpus=(0,), gpu_bytes=30 * GIB),
        Pend("beta", "needs 1 GPU x 30.0 GiB; waiting for the engine starting on GPU0"),
    ]


def test_engines_that_fit_on_different_gpus_start_together():
    first, second = engine("alpha"), engine("beta")

    actions = plan([first, second], [], view(80, 80, needs={"alpha": 30, "beta": 30}))

    # Both would fit GPU0, but beta goes to the idle GPU1 rather than wait.
    assert actions == [
        Start(first, "new engine", gpus=(0,), gpu_bytes=30 * GIB),
        Start(second, "new engine", gpus=(1,), gpu_bytes=30 * GIB),
    ]


def test_starts_in_one_plan_count_against_memory():
    first, second = engine("alpha"), engine("beta")

    actions = plan([first, second], [], view(80, needs={"alpha": 50, "beta": 50}))

    # Not a wait: after alpha's 50 GiB there is no room for beta at all.
    assert actions == [
        Start(first, "new engine", gpus=(0,), gpu_bytes=50 * GIB),
        Pend("beta", "needs 1 GPU x 50.0 GiB; GPU0 26.0 GiB free"),
    ]


def test_a_tensor_parallel_start_makes_all_its_gpus_busy():
    wide, narrow = engine("alpha", tensor_parallel=2), engine("beta")

    actions = plan([wide, narrow], [], view(80, 80, needs={"alpha": 20, "beta": 20}))

    assert actions == [
        Start(wide, "new engine", gpus=(0, 1), gpu_bytes=20 * GIB),
        Pend("beta", "needs 1 GPU x 20.0 GiB; waiting for the engine starting on GPU0, GPU1"),
    ]


def test_an_engine_starting_on_gpu0_holds_back_only_engines_that_need_gpu0():
    starting = engine("alpha")
    big, small = engine("beta"), engine("gamma")
    observed = [instance(starting, InstanceState.STARTING, (0,), 30)]
    gpus = view(80, 24, needs={"alpha": 30, "beta": 40, "gamma": 20})

    actions = plan([starting, big, small], observed, gpus)

    assert actions == [
        Wait("alpha", "waiting for /health", NOW - 10 + starting.spec.startup_timeout_s),
        Pend("beta", "needs 1 GPU x 40.0 GiB; waiting for the engine starting on GPU0"),
        Start(small, "new engine", gpus=(1,), gpu_bytes=20 * GIB),
    ]


def test_once_the_first_is_ready_the_next_shares_its_gpu():
    ready = engine("alpha")
    waiting = engine("beta")
    observed = [
        instance(ready, InstanceState.READY, (0,), 30),
        instance(waiting, InstanceState.PENDING, message="waiting"),
    ]

    actions = plan([ready, waiting], observed, view(80, needs={"alpha": 30, "beta": 40}))

    assert actions == [Start(waiting, "retry: waiting", gpus=(0,), gpu_bytes=40 * GIB)]


def test_an_engine_starting_that_is_no_longer_desired_still_blocks_its_gpu():
    leaving = engine("alpha")
    newcomer = engine("beta")
    observed = [instance(leaving, InstanceState.STARTING, (0,), 30)]

    actions = plan([newcomer], observed, view(80, needs={"beta": 30}))

    assert [action.action for action in actions] == ["stop", "pending"]
    assert actions[1] == Pend(
        "beta", "needs 1 GPU x 30.0 GiB; waiting for the engine starting on GPU0"
    )


# -- engines that take no GPU, and engines placement cannot size -----------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"use_gpu": False}, id="llm-use_gpu-false"),
        pytest.param({"kind": "embedding"}, id="embedding-default"),
        pytest.param({"kind": "embedding", "use_gpu": False}, id="embedding-use_gpu-false"),
    ],
)
def test_engines_without_gpus_are_never_placed(fields):
    cpu = engine("cpu", **fields)

    with_gpus = plan([cpu], [], view(80, needs={}))
    without = plan([cpu], [], GpuView((), message="no GPUs (NVML unavailable: x)"))

    assert with_gpus == without == [Start(cpu, "new engine")]
    assert with_gpus[0].gpus == () and with_gpus[0].gpu_bytes == 0


def test_an_embedding_engine_with_use_gpu_is_placed():
    embed = engine("embed", kind="embedding", use_gpu=True)

    actions = plan([embed], [], view(80, needs={"embed": 2}))

    assert actions == [Start(embed, "new engine", gpus=(0,), gpu_bytes=2 * GIB)]


def test_no_gpus_at_all_pends_with_the_inventory_message():
    chat = engine("chat")
    nothing = GpuView((), message="no GPUs (NVML unavailable: x)", needs={"chat": 20 * GIB})

    actions = plan([chat], [], nothing)

    assert actions == [Pend("chat", "needs 1 GPU x 20.0 GiB; no GPUs (NVML unavailable: x)")]


def test_an_estimate_error_pends_with_that_message():
    reason = "cannot estimate the GPU memory of 'org/model': ...; set gpu_memory_gb in the spec"
    chat = engine("chat")

    actions = plan([chat], [], view(80, needs={"chat": reason}))

    assert actions == [Pend("chat", reason)]


def test_an_engine_missing_from_the_needs_pends():
    assert plan([engine("chat")], [], view(80, needs={})) == [Pend("chat", "no memory estimate")]


def test_cpu_engines_and_gpu_engines_in_one_plan():
    cpu, chat = engine("alpha", kind="embedding"), engine("beta")

    actions = plan([cpu, chat], [], GpuView((), message="no GPUs (NVML unavailable: x)"))

    assert actions == [
        Start(cpu, "new engine"),
        Pend("beta", "no memory estimate"),
    ]


# -- reservations of engines that are not running --------------------------------------


def test_a_backoff_instance_keeps_its_reservation_and_its_restart_reuses_it():
    newcomer, crashy = engine("alpha"), engine("beta")
    # One crash: the restart is due at once.
    observed = [instance(crashy, InstanceState.BACKOFF, (0,), 60, failures=1, exited_at=NOW - 1)]
    gpus = view(80, needs={"alpha": 30, "beta": 60})

    actions = plan([newcomer, crashy], observed, gpus)

    assert actions == [
        Pend("alpha", "needs 1 GPU x 30.0 GiB; GPU0 16.0 GiB free"),
        Start(crashy, "crash #1 in a row", gpus=(0,), gpu_bytes=60 * GIB, kind=StartKind.RESTART),
    ]


def test_a_backoff_instance_waiting_for_its_delay_still_holds_its_memory():
    newcomer, crashy = engine("alpha"), engine("beta")
    observed = [instance(crashy, InstanceState.BACKOFF, (0,), 60, failures=4, exited_at=NOW - 1)]

    actions = plan([newcomer, crashy], observed, view(80, needs={"alpha": 30, "beta": 60}))

    assert actions == [
        Pend("alpha", "needs 1 GPU x 30.0 GiB; GPU0 16.0 GiB free"),
        Wait("beta", "backoff after crash #4", NOW - 1 + 8.0),
    ]


def test_a_stopping_instance_keeps_its_reservation():
    newcomer, leaving = engine("alpha"), engine("beta")
    observed = [instance(leaving, InstanceState.STOPPING, (0,), 60, pid=4243)]

    actions = plan([newcomer], observed, view(80, needs={"alpha": 30}))

    assert actions == [Pend("alpha", "needs 1 GPU x 30.0 GiB; GPU0 16.0 GiB free")]


@pytest.mark.parametrize(
    "state", [InstanceState.STOPPED, InstanceState.FAILED, InstanceState.PENDING]
)
def test_instances_without_a_process_release_their_gpus(state):
    newcomer, gone = engine("alpha"), engine("beta")
    observed = [instance(gone, state, (0,), 60)]

    actions = plan([newcomer], observed, view(80, needs={"alpha": 30}))

    starts = [action for action in actions if isinstance(action, Start)]
    assert starts == [Start(newcomer, "new engine", gpus=(0,), gpu_bytes=30 * GIB)]


def test_a_spec_change_while_running_replaces_without_placing():
    chat = engine("chat")
    running = instance(chat, InstanceState.READY, (0,), 30, spec_hash="0123456789abcdef")

    actions = plan([chat], [running], view(80, needs={"chat": 70}))

    # 30 + 70 do not fit one 80 GiB GPU: stop first, then start.
    assert len(actions) == 1 and isinstance(actions[0], Replace)
    assert actions[0].reason.startswith("stop first: needs 1 GPU x 70.0 GiB")


def test_a_spec_change_that_fits_beside_the_running_process_surges():
    chat = engine("chat")
    running = instance(chat, InstanceState.READY, (0,), 30, spec_hash="0123456789abcdef")

    actions = plan([chat], [running], view(80, 80, needs={"chat": 40}))

    assert len(actions) == 1 and actions[0].action == "surge"
    # Best fit counts the old process's 30 GiB: GPU0 has 46 GiB left, GPU1 76.
    assert actions[0].gpus == (0,) and actions[0].gpu_bytes == 40 * GIB


def test_a_restart_after_a_spec_change_in_backoff_may_reuse_its_own_memory():
    chat = engine("chat")
    crashed = instance(
        chat, InstanceState.BACKOFF, (0,), 60, spec_hash="0123456789abcdef", failures=1
    )

    actions = plan([chat], [crashed], view(80, needs={"chat": 70}))

    assert actions == [Start(chat, "spec changed", gpus=(0,), gpu_bytes=70 * GIB)]
