"""Argv and environment of an engine process, per runtime."""

from __future__ import annotations

import os
from collections.abc import Mapping

from sagellmd.config import Settings
from sagellmd.spec import EngineSpec

ENGINE_HOST = "127.0.0.1"


def _fill(template: list[str], values: Mapping[str, str]) -> list[str]:
    filled = []
    for part in template:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        filled.append(part)
    return filled


def vllm_flags(spec: EngineSpec, port: int) -> list[str]:
    return [
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


def embedding_flags(spec: EngineSpec, port: int) -> list[str]:
    device = "cuda" if spec.wants_gpu else "cpu"
    return ["--model", spec.model, "--host", ENGINE_HOST, "--port", str(port), "--device", device]


BUILTIN_FLAGS = {"vllm": vllm_flags, "embedding": embedding_flags}


def build_argv(spec: EngineSpec, settings: Settings, engine_id: str, port: int) -> list[str]:
    """The runtime's command (placeholders filled), its built-in flags, then extra_args."""
    values = {
        "model": spec.model,
        "port": str(port),
        "host": ENGINE_HOST,
        "id": engine_id,
        "name": spec.name,
    }
    argv = _fill(settings.runtime_command(spec.runtime), values)
    flags = BUILTIN_FLAGS.get(spec.runtime)
    if flags is not None:
        argv += flags(spec, port)
    return argv + list(spec.extra_args)


def build_env(spec: EngineSpec, settings: Settings, engine_id: str, port: int) -> dict[str, str]:
    """The daemon's environment, the spec's env, and the markers that identify the engine."""
    env = dict(os.environ)
    env.update(spec.env)
    env["SAGELLM_ENGINE_ID"] = engine_id
    env["SAGELLM_HOME"] = str(settings.home)
    env["SAGELLM_ENGINE_PORT"] = str(port)
    if not spec.wants_gpu:
        # An engine kept off GPUs must not grab one behind the placer's back.
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env
