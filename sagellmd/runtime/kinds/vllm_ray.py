"""The launch of a vLLM engine that spans nodes through its Ray executor.

vLLM's docs (docs/serving/parallelism_scaling.md): tensor parallel within a node, pipeline
parallel across nodes, `--distributed-executor-backend ray`, the API server on a node of the
Ray cluster; `VLLM_HOST_IP` is the address of that node on the private network (vLLM's Ray
executor does not copy it to workers: each sets its own). Ray, not CUDA_VISIBLE_DEVICES,
gives each worker its GPU, so the leader gets no such variable. The server runs under
`sagellmd.cluster.in_placement_group`, which makes it use sagellm's placement group.
"""

from __future__ import annotations

import sys

from sagellmd.spec import EngineSpec

LAUNCHER_MODULE = "sagellmd.cluster.in_placement_group"


def ray_executor_launch(
    argv: list[str],
    env: dict[str, str],
    spec: EngineSpec,
    group_id: str,
    ray_address: str,
    host_ip: str,
    python: str = sys.executable,
) -> tuple[list[str], dict[str, str]]:
    cut = len(argv) - len(spec.extra_args)
    argv = [*argv[:cut], "--distributed-executor-backend", "ray", *argv[cut:]]
    env = {key: value for key, value in env.items() if key != "CUDA_VISIBLE_DEVICES"}
    env.update(RAY_ADDRESS=ray_address, VLLM_HOST_IP=host_ip, SAGELLM_PLACEMENT_GROUP=group_id)
    return [python, "-m", LAUNCHER_MODULE, "--", *argv], env
