"""Argv and environment of an engine process, per runtime."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sagellmd.config import Settings
from sagellmd.models.resolve import engine_model, model_is_local
from sagellmd.spec import EngineSpec

ENGINE_HOST = "127.0.0.1"


@dataclass(frozen=True)
class GpuAssignment:
    """The GPUs reserved for an engine and the share of each it may use."""

    gpus: tuple[int, ...]
    memory_fraction: float


def _fill(template: list[str], values: Mapping[str, str]) -> list[str]:
    filled = []
    for part in template:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        filled.append(part)
    return filled


def vllm_flags(spec: EngineSpec, port: int, assignment: GpuAssignment | None) -> list[str]:
    flags = [
        "--model",
        spec.model,
        "--host",
        ENGINE_HOST,
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(spec.tensor_parallel),
        "--pipeline-parallel-size",
        str(spec.pipeline_parallel),
        "--max-num-seqs",
        str(spec.max_concurrent_requests),
    ]
    if assignment is not None:
        # vLLM sizes its KV cache to this share of each GPU: our reservation, no more.
        flags += ["--gpu-memory-utilization", f"{assignment.memory_fraction:.4f}"]
    return flags


def embedding_flags(spec: EngineSpec, port: int, assignment: GpuAssignment | None) -> list[str]:
    device = "cuda" if assignment is not None else "cpu"
    return ["--model", spec.model, "--host", ENGINE_HOST, "--port", str(port), "--device", device]


BUILTIN_FLAGS = {"vllm": vllm_flags, "embedding": embedding_flags}


def build_argv(
    spec: EngineSpec,
    settings: Settings,
    engine_id: str,
    port: int,
    assignment: GpuAssignment | None = None,
) -> list[str]:
    """The runtime's command (placeholders filled), its built-in flags, then extra_args.

    A model found on disk is passed as its directory, so engines start without the hub.
    """
    model = engine_model(spec, settings)
    values = {
        "model": model.argument,
        "model_id": spec.model,
        "port": str(port),
        "host": ENGINE_HOST,
        "id": engine_id,
        "name": spec.name,
    }
    argv = _fill(settings.runtime_command(spec.runtime), values)
    flags = BUILTIN_FLAGS.get(spec.runtime)
    if flags is not None:
        argv += flags(replace(spec, model=model.argument), port, assignment)
        argv += model.extra_flags
    return argv + list(spec.extra_args)


def build_env(
    spec: EngineSpec,
    settings: Settings,
    engine_id: str,
    port: int,
    assignment: GpuAssignment | None = None,
) -> dict[str, str]:
    """The daemon's environment, the spec's env, and the markers that identify the engine."""
    env = dict(os.environ)
    env.update(spec.env)
    if "HF_HUB_OFFLINE" not in env and model_is_local(spec, settings):
        # The model is on disk: huggingface_hub would still ask the hub for every file
        # (and retry for over a minute when it cannot reach it) unless told it is offline.
        env["HF_HUB_OFFLINE"] = "1"
    env["SAGELLM_ENGINE_ID"] = engine_id
    env["SAGELLM_HOME"] = str(settings.home)
    env["SAGELLM_ENGINE_PORT"] = str(port)
    # Only the reserved GPUs are visible; an engine without a reservation sees none,
    # so it cannot take GPU memory behind the placer's back.
    env["CUDA_VISIBLE_DEVICES"] = (
        ",".join(str(gpu) for gpu in assignment.gpus) if assignment else ""
    )
    return env
