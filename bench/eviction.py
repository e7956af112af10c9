"""Time of one eviction decision with 50 engines on 8 simulated GPUs.

Run: .venv/bin/python bench/eviction.py
Fills 8 x 80 GiB GPUs with 50 engines (tp 1, 2 or 4; a third always-on, a few busy, the
rest idle-able with random last use), then asks where a new engine of 1, 2, 4 or 8 GPUs
goes, for 200 seeded layouts. Prints the decision time (median, p95, max) overall, in CPU
time, and per GPU count, how many evictions the answers made, and how often the search
budget ran out (the greedy answer stands). Target: under 5 ms per decision.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sagellmd.gpu.eviction import Eviction, EvictionCandidate, choose_evictions  # noqa: E402
from sagellmd.gpu.placement import (  # noqa: E402
    GIB,
    GpuCapacity,
    GpuView,
    Reservation,
    available_bytes,
    reserved_by_gpu,
)

ENGINES = 50
GPUS = tuple(GpuCapacity(index, 80 * GIB) for index in range(8))
VIEW = GpuView(GPUS, 0.95)
LAYOUTS = 200


def layout(rng: random.Random) -> tuple[list[Reservation], list[EvictionCandidate]]:
    """50 engines packed onto the GPUs with what room there is (a full workstation)."""
    reservations: list[Reservation] = []
    candidates: list[EvictionCandidate] = []
    while len(reservations) < ENGINES:
        count = rng.choice((1, 1, 1, 2, 4))
        need = int(rng.uniform(2, 14) * GIB)
        reserved = reserved_by_gpu(reservations)
        room = sorted(
            (available_bytes(g, reserved.get(g.index, 0), VIEW.headroom), g.index) for g in GPUS
        )
        fitting = [index for free, index in room if free >= need]
        if len(fitting) < count:
            count, need = 1, int(GIB)
            fitting = [index for free, index in room if free >= need] or [room[-1][1]]
        engine_id = f"e{len(reservations)}"
        gpus = tuple(sorted(rng.sample(fitting, count)))
        reservations.append(Reservation(engine_id, gpus, need))
        kind = rng.random()
        candidates.append(
            EvictionCandidate(engine_id, kind > 0.33, 0.33 < kind < 0.43, rng.uniform(0, 1e4))
        )
    return reservations, candidates


def main() -> None:
    rng = random.Random(14)
    times: dict[int, list[float]] = {1: [], 2: [], 4: [], 8: []}
    cpu_times: list[float] = []
    evictions: list[int] = []
    greedy = unplaced = 0
    for _ in range(LAYOUTS):
        reservations, candidates = layout(rng)
        for count in times:
            need = int(rng.uniform(10, 40) * GIB)
            started = time.perf_counter()
            cpu = time.thread_time()
            outcome = choose_evictions(count, need, VIEW, reservations, candidates)
            times[count].append((time.perf_counter() - started) * 1000)
            cpu_times.append((time.thread_time() - cpu) * 1000)
            if isinstance(outcome, Eviction):
                evictions.append(len(outcome.evict))
                greedy += not outcome.exact
            else:
                unplaced += 1
    every = sorted(t for samples in times.values() for t in samples)
    print(f"eviction decision, {ENGINES} engines on {len(GPUS)} GPUs, {len(every)} decisions")
    print(
        f"  all: median {statistics.median(every):.3f} ms,"
        f" p95 {every[int(len(every) * 0.95)]:.3f} ms, max {every[-1]:.3f} ms (target < 5 ms)"
    )
    cpu_times.sort()
    print(
        f"  cpu time: median {statistics.median(cpu_times):.3f} ms,"
        f" p95 {cpu_times[int(len(cpu_times) * 0.95)]:.3f} ms, max {cpu_times[-1]:.3f} ms"
        " (the wall times above include waiting for a core on a busy machine)"
    )
    for count, samples in times.items():
        samples.sort()
        print(
            f"  {count} GPU(s): median {statistics.median(samples):.3f} ms,"
            f" p95 {samples[int(len(samples) * 0.95)]:.3f} ms, max {samples[-1]:.3f} ms"
        )
    print(
        f"  placed {len(evictions)} (evicting {statistics.mean(evictions):.1f} engines on"
        f" average, at most {max(evictions)}), no room {unplaced}, budget spent {greedy}"
    )


if __name__ == "__main__":
    main()
