"""The `disaggregated:` block of an llm engine, as a value: its fields, their rules, its parse.

Apart from disaggregation.py (the instances, their specs, the GPU count) so that spec.py can
parse the block without importing what builds on EngineSpec. Pure: bad input raises
SpecError with `path: rule, got value`, as spec.py reports it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sagellmd.errors import SpecError
from sagellmd.json_values import json_value_problems
from sagellmd.schemas.engine import TEXT_PATTERN
from sagellmd.schemas.validator import ecma_match
from sagellmd.spec_rules import CONTROL_RULES, FIELD_RULES

ROLES = ("prefill", "decode")
CONNECTORS = ("nixl", "p2p-nccl", "lmcache")
DEFAULT_CONNECTOR = "nixl"
# What ENGINE_SCHEMA allows for tensor_parallel; replicas get the same ceiling.
MAX_TENSOR_PARALLEL = 64
MAX_REPLICAS = 64
MAX_GPU_MEMORY_GB = 4096
# `chat.prefill-0`: the engine id, this separator, the role, '-', the index.
INSTANCE_SEPARATOR = "."
# Flags sagellm sets itself on every instance; a second copy would fight it.
OWNED_FLAGS = ("--kv-transfer-config", "--tensor-parallel-size", "--port")

BLOCK_FIELDS = ("prefill", "decode", "connector", "threshold_input_tokens")
ROLE_FIELDS = ("replicas", "tensor_parallel", "gpu_memory_gb", "extra_args")
RULES = {
    "replicas": f"must be an integer from 1 to {MAX_REPLICAS}",
    "tensor_parallel": f"{FIELD_RULES['tensor_parallel']} and at most {MAX_TENSOR_PARALLEL}",
    "gpu_memory_gb": FIELD_RULES["gpu_memory_gb"],
    "extra_args": FIELD_RULES["extra_args"],
    "connector": f"must be one of: {', '.join(CONNECTORS)}",
    "threshold_input_tokens": (
        "must be an integer >= 0 or null (prompts with fewer input tokens skip the prefill"
        " step and go straight to a decode instance)"
    ),
}


@dataclass(frozen=True)
class RoleSpec:
    """How many instances of one phase run and how each is sized."""

    replicas: int = 1
    tensor_parallel: int = 1
    gpu_memory_gb: float | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def gpus(self) -> int:
        """GPUs of the whole role (pipeline parallelism not counted)."""
        return self.replicas * self.tensor_parallel

    def to_dict(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "tensor_parallel": self.tensor_parallel,
            "gpu_memory_gb": self.gpu_memory_gb,
            "extra_args": list(self.extra_args),
        }


@dataclass(frozen=True)
class Disaggregation:
    """An engine served as prefill instances and decode instances that hand over the KV cache."""

    prefill: RoleSpec = RoleSpec()
    decode: RoleSpec = RoleSpec()
    connector: str = DEFAULT_CONNECTOR
    # Prompts estimated shorter than this skip prefill; None sends every prompt through P.
    threshold_input_tokens: int | None = None

    def role(self, name: str) -> RoleSpec:
        if name not in ROLES:
            raise ValueError(f"unknown role {name!r}; roles: {', '.join(ROLES)}")
        return self.prefill if name == "prefill" else self.decode

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefill": self.prefill.to_dict(),
            "decode": self.decode.to_dict(),
            "connector": self.connector,
            "threshold_input_tokens": self.threshold_input_tokens,
        }


def _describe(value: Any) -> str:
    # spec.py's wording for the value a field got; its helper is private to it.
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_integer(value: Any) -> bool:
    # JSON Schema's integer, as spec.py validates it: 2.0 counts, true does not.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _unknown_fields(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> list[str]:
    extra = sorted(key for key in data if key not in allowed)
    if not extra:
        return []
    unknown = ", ".join(repr(name) for name in extra)
    return [f"{where}: unknown field {unknown}; allowed fields: {', '.join(sorted(allowed))}"]


def _int_problem(value: Any, where: str, rule: str, low: int, high: int | None) -> str | None:
    if _is_integer(value) and value >= low and (high is None or value <= high):
        return None
    return f"{where}: {rule}, got {_describe(value)}"


def owned_flag_problems(args: list[str], where: str) -> list[str]:
    problems = []
    for index, arg in enumerate(args):
        flag = arg.partition("=")[0]
        if flag in OWNED_FLAGS:
            problems.append(
                f"{where}[{index}]: sagellm sets {flag} on every prefill and decode instance"
                " itself; remove it (a role sets its size with tensor_parallel)"
            )
    return problems


def _extra_args_problems(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(arg, str) for arg in value):
        return [f"{where}: {RULES['extra_args']}, got {_describe(value)}"]
    problems = [
        f"{where}[{index}]: {CONTROL_RULES[TEXT_PATTERN]}, got {_describe(arg)}"
        for index, arg in enumerate(value)
        if not ecma_match(TEXT_PATTERN, arg)
    ]
    return problems + owned_flag_problems(value, where)


def _parse_role(data: Any, where: str) -> tuple[RoleSpec, list[str]]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        rule = f"must be a mapping of {', '.join(ROLE_FIELDS)}"
        return RoleSpec(), [f"{where}: {rule}, got {_describe(data)}"]
    problems = _unknown_fields(data, ROLE_FIELDS, where)
    for name in ("replicas", "tensor_parallel"):
        if name in data:
            high = MAX_REPLICAS if name == "replicas" else MAX_TENSOR_PARALLEL
            problem = _int_problem(data[name], f"{where}.{name}", RULES[name], 1, high)
            problems += [problem] if problem else []
    memory = data.get("gpu_memory_gb")
    if memory is not None and (
        isinstance(memory, bool)
        or not isinstance(memory, int | float)
        or not math.isfinite(memory)
        or not 0 < memory <= MAX_GPU_MEMORY_GB
    ):
        problems.append(f"{where}.gpu_memory_gb: {RULES['gpu_memory_gb']}, got {_describe(memory)}")
    if "extra_args" in data:
        problems += _extra_args_problems(data["extra_args"], f"{where}.extra_args")
    if problems:
        return RoleSpec(), problems
    return (
        RoleSpec(
            replicas=int(data.get("replicas", 1)),
            tensor_parallel=int(data.get("tensor_parallel", 1)),
            gpu_memory_gb=None if memory is None else float(memory),
            extra_args=tuple(data.get("extra_args", ())),
        ),
        [],
    )


def parse_disaggregated(data: Any, where: str = "disaggregated") -> Disaggregation:
    """Validate a `disaggregated:` value (from JSON or YAML) and fill in its defaults.

    `where` is the block's path in messages, e.g. `engines[0].disaggregated`.
    """
    problems = json_value_problems(data, where)
    if problems:
        raise SpecError(problems)
    if not isinstance(data, Mapping):
        raise SpecError(
            [
                f"{where}: must be a mapping of {', '.join(BLOCK_FIELDS)} ({{}} for one prefill"
                f" and one decode instance over nixl), got {_describe(data)}"
            ]
        )
    problems = _unknown_fields(data, BLOCK_FIELDS, where)
    prefill, prefill_problems = _parse_role(data.get("prefill"), f"{where}.prefill")
    decode, decode_problems = _parse_role(data.get("decode"), f"{where}.decode")
    problems += prefill_problems + decode_problems
    connector = data.get("connector", DEFAULT_CONNECTOR)
    if connector not in CONNECTORS:
        problems.append(f"{where}.connector: {RULES['connector']}, got {_describe(connector)}")
    threshold = data.get("threshold_input_tokens")
    if threshold is not None:
        problem = _int_problem(
            threshold, f"{where}.threshold_input_tokens", RULES["threshold_input_tokens"], 0, None
        )
        problems += [problem] if problem else []
    if connector == "lmcache" and decode.tensor_parallel > 1:
        # LMCache's receiver takes an init and an alloc port per TP rank (its proxy's
        # --decoder-init-port list); sagellm allocates one of each so far.
        problems.append(
            f"{where}.decode.tensor_parallel: connector lmcache supports 1 for now, got"
            f" {decode.tensor_parallel}; use connector nixl for a tensor-parallel decode"
        )
    if problems:
        raise SpecError(problems)
    return Disaggregation(
        prefill=prefill,
        decode=decode,
        connector=str(connector),
        threshold_input_tokens=None if threshold is None else int(threshold),
    )


# The connectors whose request protocol the gateway speaks (gateway/pd_protocol.py).
SERVED_CONNECTORS = ("nixl",)
SERVED_CONNECTOR_RULE = (
    "only nixl is supported so far (p2p-nccl and lmcache need a proxy protocol the gateway"
    " does not speak yet); use connector: nixl"
)
# `chat.prefill-0` is an instance of engine `chat`: a preset engine named `prefill-0` would
# have the id of an instance of the engine named like its preset.
RESERVED_NAME = re.compile(r"^(prefill|decode)-[0-9]+$")


def parse_served_block(data: Any, where: str = "disaggregated") -> Disaggregation:
    """parse_disaggregated, and only with a connector the gateway can serve."""
    block = parse_disaggregated(data, where)
    if block.connector not in SERVED_CONNECTORS:
        raise SpecError([f"{where}.connector: {SERVED_CONNECTOR_RULE}, got {block.connector!r}"])
    return block


def reserved_name_problem(name: str, where: str) -> str | None:
    """Why a preset engine may not have this name (an instance's), or None."""
    if not RESERVED_NAME.match(name):
        return None
    return (
        f"{where}: {name!r} is reserved in presets for the instances of disaggregated engines"
        " (<engine>.prefill-N, <engine>.decode-N); choose another name"
    )
