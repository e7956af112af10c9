"""The runtime kinds by name, one line each; a runtime not listed is a plain `command`."""

from __future__ import annotations

from sagellmd.disaggregation import engine_problems
from sagellmd.errors import SpecError
from sagellmd.models.resolve import EngineModel
from sagellmd.runtime.kinds.base import EngineSettings, RuntimeKind
from sagellmd.runtime.kinds.command import CommandKind
from sagellmd.runtime.kinds.embedding import EmbeddingKind
from sagellmd.runtime.kinds.gateway import GatewayKind
from sagellmd.runtime.kinds.llamacpp import LlamaCppKind
from sagellmd.runtime.kinds.vllm import VllmKind
from sagellmd.spec import EngineSpec

KINDS: dict[str, RuntimeKind] = {
    "vllm": VllmKind(),
    "embedding": EmbeddingKind(),
    "llama-cpp": LlamaCppKind(),
    "gateway": GatewayKind(),
}
COMMAND = CommandKind()


def kind_for(runtime: str) -> RuntimeKind:
    """The kind of a runtime name: a built-in one, else the config.yaml command template."""
    return KINDS.get(runtime, COMMAND)


def startup_timeout_for(runtime: str, kind: str) -> float:
    """The startup_timeout_s of a spec that sets none, as its runtime kind says."""
    return kind_for(runtime).startup_timeout_s[kind]


def check_spec(spec: EngineSpec, where: str) -> None:
    """Reject a spec its runtime kind cannot run (a llama-cpp model that names no GGUF file)."""
    kind = kind_for(spec.runtime)
    problems = kind.spec_problems(spec)
    if spec.idle_action == "sleep" and not kind.supports_sleep:
        sleepers = ", ".join(name for name, known in KINDS.items() if known.supports_sleep)
        problems.append(
            f"idle_action: 'sleep' needs a runtime with sleep mode ({sleepers}); runtime"
            f" {spec.runtime!r} has none, use idle_action: stop"
        )
    problems = [f"{where}.{problem}" for problem in problems]
    if spec.disaggregated is not None:
        # A configured runtime may be a vllm under another name: judged by its kind.
        problems += engine_problems(spec, where, runtime_kind=kind.name)
    if problems:
        raise SpecError(problems)


def wants_gpu(spec: EngineSpec) -> bool:
    """Whether the engine needs reserved GPUs, as its runtime kind says."""
    return kind_for(spec.runtime).wants_gpu(spec)


def engine_model(spec: EngineSpec, settings: EngineSettings) -> EngineModel:
    """What the engine's `{model}` / `--model` get, as its runtime kind resolves it."""
    return kind_for(spec.runtime).model(spec, settings)
