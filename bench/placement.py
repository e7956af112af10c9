"""Time of GPU placement decisions with 200 engines on 8 simulated GPUs.

Run: .venv/bin/python bench/placement.py
Prints the time of one placement decision (one new engine against 199 reservations) and
of a whole planning pass that places 200 engines from nothing. Target: one decision < 5 ms.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sagellmd.desired import DesiredEngine  # noqa: E402
from sagellmd.gpu.placement import GIB, GpuCapacity, GpuView, Reservation, place  # noqa: E402
from sagellmd.instance import Instance, InstanceState  # noqa: E402
from sagellmd.reconcile.plan import plan_actions  # noqa: E402
from sagellmd.spec import parse_engine  # noqa: E402

ENGINES = 200
GPUS = tuple(GpuCapacity(index, 640 * GIB) for index in range(8))


def timed(function, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    rng = random.Random(7)
    reservations = []
    for index in range(ENGINES - 1):
        count = rng.choice((1, 1, 2, 4))
        gpus = tuple(sorted(rng.sample(range(8), count)))
        reservations.append(Reservation(f"e{index}", gpus, int(rng.uniform(1, 8) * GIB)))
    one = timed(lambda: place(2, 10 * GIB, GPUS, reservations, 0.95), 500)

    desired = [
        DesiredEngine(
            f"e{i}",
            None,
            parse_engine(
                {
                    "name": f"e{i}",
                    "model": "fake/m-1B",
                    "tensor_parallel": rng.choice((1, 1, 2, 4)),
                    "gpu_memory_gb": rng.uniform(1, 8),
                }
            ),
        )
        for i in range(ENGINES)
    ]
    needs = {engine.id: int(engine.spec.gpu_memory_gb * GIB) for engine in desired}
    view = GpuView(GPUS, 0.95, "simulated", needs)
    whole = timed(lambda: plan_actions(desired, {}, 0.0, gpus=view), 20)
    started = sum(
        1 for a in plan_actions(desired, {}, 0.0, gpus=view).actions if a.action == "start"
    )

    # The same decision inside a planning pass: 199 ready engines hold their GPUs.
    observed = {
        r.engine_id: Instance(
            r.engine_id,
            1,
            desired[i].spec.spec_hash,
            InstanceState.READY,
            pid=1000 + i,
            port=20000 + i,
            gpus=r.gpus,
            gpu_bytes=r.per_gpu_bytes,
        )
        for i, r in enumerate(reservations)
    }
    in_pass = timed(lambda: plan_actions(desired, observed, 0.0, gpus=view), 200)

    p95 = sorted(one)[int(0.95 * len(one)) - 1]
    pass_p95 = sorted(in_pass)[int(0.95 * len(in_pass)) - 1]
    print(
        f"one placement decision, {ENGINES - 1} reservations on 8 GPUs: "
        f"median {statistics.median(one):.3f} ms, p95 {p95:.3f} ms "
        f"(target < 5 ms, p95/target {p95 / 5:.3f})"
    )
    print(
        f"planning pass of {ENGINES} engines, 199 ready and 1 to place: "
        f"median {statistics.median(in_pass):.2f} ms, p95 {pass_p95:.2f} ms "
        f"(p95/target {pass_p95 / 5:.3f})"
    )
    print(
        f"whole planning pass placing {ENGINES} engines ({started} started, the rest wait "
        f"for a shared GPU's start): median {statistics.median(whole):.1f} ms, "
        f"per engine {statistics.median(whole) / ENGINES:.3f} ms"
    )


if __name__ == "__main__":
    main()
