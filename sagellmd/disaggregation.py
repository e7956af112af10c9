"""The `disaggregated:` block of an llm engine: prefill and decode roles, their instances.

An engine that declares it runs as ordinary instances `ID.prefill-N` and `ID.decode-N`, each
a copy of the engine's spec with its role's tensor_parallel, gpu_memory_gb and extra_args
(the kv-transfer flags come from runtime/kinds/vllm_kv_transfer.py). Pure: values in, values
out; bad input raises SpecError with `path: rule, got value`, as spec.py reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sagellmd.disaggregated_block import (
    BLOCK_FIELDS,
    CONNECTORS,
    DEFAULT_CONNECTOR,
    INSTANCE_SEPARATOR,
    OWNED_FLAGS,
    ROLE_FIELDS,
    ROLES,
    RULES,
    Disaggregation,
    RoleSpec,
    owned_flag_problems,
    parse_disaggregated,
)
from sagellmd.errors import SpecError
from sagellmd.spec import EngineSpec

# The block's names, for the modules that import them from here.
__all__ = [
    "BLOCK_FIELDS",
    "CONNECTORS",
    "DEFAULT_CONNECTOR",
    "INSTANCE_SEPARATOR",
    "OWNED_FLAGS",
    "ROLES",
    "ROLE_FIELDS",
    "RULES",
    "Disaggregation",
    "PdInstance",
    "RoleSpec",
    "check_gpu_count",
    "engine_problems",
    "gpu_shortfall",
    "gpus_needed",
    "instance_id",
    "instance_spec",
    "instances_of",
    "parse_disaggregated",
]


@dataclass(frozen=True)
class PdInstance:
    """One process of a disaggregated engine: `chat.prefill-0`, `chat.decode-1`, ..."""

    instance_id: str
    engine_id: str
    role: str
    index: int
    tensor_parallel: int
    gpu_memory_gb: float | None
    extra_args: tuple[str, ...]


def engine_problems(spec: EngineSpec, where: str, runtime_kind: str | None = None) -> list[str]:
    """Why this engine cannot be disaggregated, each as `path: reason` ([] when it can).

    `runtime_kind` is the kind of the spec's runtime (a configured runtime may be a vllm
    under another name); it defaults to the runtime's own name.
    """
    kind = runtime_kind or spec.runtime

    def field(name: str) -> str:
        return f"{where}.{name}" if where else name

    block = field("disaggregated")
    problems = []
    if spec.kind != "llm":
        problems.append(
            f"{block}: only llm engines can be disaggregated; kind {spec.kind!r} has no"
            " decode phase to separate from its prefill (remove disaggregated)"
        )
    elif kind != "vllm":
        problems.append(
            f"{block}: needs the vllm runtime (its KV connectors move the KV cache from the"
            f" prefill to the decode instance); runtime {spec.runtime!r} has none"
        )
    if spec.port is not None:
        problems.append(
            f"{field('port')}: a disaggregated engine runs several"
            f" instances, each on its own automatic port; remove port (got {spec.port})"
        )
    return problems + owned_flag_problems(list(spec.extra_args), field("extra_args"))


def instance_id(engine_id: str, role: str, index: int) -> str:
    return f"{engine_id}{INSTANCE_SEPARATOR}{role}-{index}"


def instances_of(engine_id: str, block: Disaggregation) -> tuple[PdInstance, ...]:
    """Every instance of the engine, prefill ones first, each role by index."""
    return tuple(
        PdInstance(
            instance_id=instance_id(engine_id, role, index),
            engine_id=engine_id,
            role=role,
            index=index,
            tensor_parallel=block.role(role).tensor_parallel,
            gpu_memory_gb=block.role(role).gpu_memory_gb,
            extra_args=block.role(role).extra_args,
        )
        for role in ROLES
        for index in range(block.role(role).replicas)
    )


def instance_spec(spec: EngineSpec, instance: PdInstance) -> EngineSpec:
    """The engine's spec as this instance runs it: the role's size, the role's args after the
    engine's; the role's gpu_memory_gb, else the engine's (None: estimated)."""
    memory = instance.gpu_memory_gb if instance.gpu_memory_gb is not None else spec.gpu_memory_gb
    return replace(
        spec,
        tensor_parallel=instance.tensor_parallel,
        gpu_memory_gb=memory,
        extra_args=spec.extra_args + instance.extra_args,
    )


def gpus_needed(block: Disaggregation, pipeline_parallel: int = 1) -> int:
    """GPUs of the whole set: P and D never share one, nor do two instances."""
    return (block.prefill.gpus + block.decode.gpus) * pipeline_parallel


def _role_sum(name: str, role: RoleSpec, pipeline_parallel: int) -> str:
    per_instance = role.tensor_parallel * pipeline_parallel
    replicas = "replica" if role.replicas == 1 else "replicas"
    gpus = "GPU" if per_instance == 1 else "GPUs"
    return f"{name} {role.replicas} {replicas} x {per_instance} {gpus}"


def gpu_shortfall(block: Disaggregation, gpu_count: int, pipeline_parallel: int = 1) -> str | None:
    """What the box lacks for the set, in words, or None when it has enough GPUs."""
    needed = gpus_needed(block, pipeline_parallel)
    box = f"this box has {gpu_count}"
    if gpu_count < 2:
        return f"disaggregated needs at least 2 GPUs (prefill and decode never share one): {box}"
    if needed <= gpu_count:
        return None
    sums = " + ".join(_role_sum(name, block.role(name), pipeline_parallel) for name in ROLES)
    return f"disaggregated needs {needed} GPUs ({sums}): {box}"


def check_gpu_count(
    block: Disaggregation, gpu_count: int, where: str = "disaggregated", pipeline_parallel: int = 1
) -> None:
    """Raise SpecError when the box cannot hold the set, saying what is missing."""
    shortfall = gpu_shortfall(block, gpu_count, pipeline_parallel)
    if shortfall is not None:
        raise SpecError([f"{where}: {shortfall}"])
