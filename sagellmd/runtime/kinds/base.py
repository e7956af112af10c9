"""The shape of a runtime kind: how an engine is launched, probed, addressed and sized."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from sagellmd.gpu.estimate import EstimateSettings, MemoryEstimate, estimate_memory
from sagellmd.models.resolve import (
    EngineModel,
    local_copy_for,
    looks_like_path,
    missing_model_reason,
    model_is_local,
)
from sagellmd.spec import DEFAULT_STARTUP_TIMEOUT_S, EngineSpec

ENGINE_HOST = "127.0.0.1"

CHAT_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
EMBEDDING_ENDPOINTS = ("/v1/embeddings",)


class EngineSettings(Protocol):
    """What a kind reads of the settings (config.Settings is one; config imports the kinds)."""

    @property
    def home(self) -> Path: ...

    @property
    def model_paths(self) -> tuple[Path, ...]: ...

    def runtime_command(self, runtime: str) -> list[str]: ...


@dataclass(frozen=True)
class GpuAssignment:
    """The GPUs reserved for an engine and the share of each it may use."""

    gpus: tuple[int, ...]
    memory_fraction: float


def fill_template(template: list[str], values: Mapping[str, str]) -> list[str]:
    """The argv template with `{model}`, `{port}`, ... replaced; never a shell line."""
    filled = []
    for part in template:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        filled.append(part)
    return filled


class RuntimeKind:
    """One way of running an engine; a kind overrides only what differs from these defaults.

    The command itself (`runtimes.<name>.command`) comes from the settings; the kind adds its
    built-in flags, its environment, how its model is found and how it is probed.
    """

    name: ClassVar[str] = "command"
    # `runtimes.<name>.command` when config.yaml sets none (a bare `python` is the daemon's).
    default_command: ClassVar[tuple[str, ...]] = ()
    # The readiness and liveness probe: GET this path; None accepts any 2xx answer.
    health_path: ClassVar[str] = "/health"
    health_status: ClassVar[int | None] = None
    # Signals an engine of this kind dies of after a graceful shutdown (it re-raises them).
    clean_exit_signals: ClassVar[frozenset[int]] = frozenset()
    # Whether the daemon checks that the hub answers before starting an engine whose model
    # is not on disk (the engine would download it itself and retry for minutes).
    downloads_models: ClassVar[bool] = False
    # The startup_timeout_s of a spec that sets none, by the spec's kind (llm, embedding).
    # A custom command could be anything, so it gets what every spec had before kinds.
    startup_timeout_s: ClassVar[Mapping[str, float]] = DEFAULT_STARTUP_TIMEOUT_S
    # Whether an engine of this kind can be put to sleep (`idle_action: sleep`): it frees
    # its GPU memory on `POST /sleep?level=1` and gets it back on `POST /wake_up`.
    supports_sleep: ClassVar[bool] = False

    def spec_problems(self, spec: EngineSpec) -> list[str]:
        """What this kind cannot run in a valid spec, each as `field: rule, got ...`."""
        return []

    def wants_gpu(self, spec: EngineSpec) -> bool:
        """Whether the engine needs reserved GPUs (the placer places only those)."""
        return spec.wants_gpu

    def estimate_gpu_memory(self, spec: EngineSpec, settings: EstimateSettings) -> MemoryEstimate:
        """Per-GPU memory an engine of this kind needs; raises EstimateError without a figure."""
        return estimate_memory(spec, settings)

    def model(self, spec: EngineSpec, settings: EngineSettings) -> EngineModel:
        """What `{model}` / `--model` get: a copy on disk when there is one (no hub needed)."""
        local = local_copy_for(spec, settings)
        return EngineModel(str(local.path)) if local is not None else EngineModel(spec.model)

    def missing_model(self, spec: EngineSpec, settings: EngineSettings) -> str | None:
        """Why the engine cannot get its model, or None when it can."""
        return missing_model_reason(spec, settings)

    def model_is_local(self, spec: EngineSpec, settings: EngineSettings) -> bool:
        """The engine runs from files on disk alone, without the hub."""
        return model_is_local(spec, settings)

    def flags(
        self,
        spec: EngineSpec,
        model: EngineModel,
        port: int,
        assignment: GpuAssignment | None,
        host: str = ENGINE_HOST,
    ) -> list[str]:
        """The built-in flags after the command (a plain command gets none)."""
        return []

    def argv(
        self,
        spec: EngineSpec,
        settings: EngineSettings,
        engine_id: str,
        port: int,
        assignment: GpuAssignment | None = None,
        host: str = ENGINE_HOST,
    ) -> list[str]:
        """The runtime's command (placeholders filled), the kind's flags, then extra_args;
        the engine listens on `host` (another node's address on a cluster)."""
        model = self.model(spec, settings)
        values = {
            "model": model.argument,
            "model_id": spec.model,
            "port": str(port),
            "host": host,
            "id": engine_id,
            "name": spec.name,
        }
        argv = fill_template(settings.runtime_command(spec.runtime), values)
        argv += self.flags(spec, model, port, assignment, host)
        return argv + list(spec.extra_args)

    def env(
        self,
        spec: EngineSpec,
        settings: EngineSettings,
        engine_id: str,
        port: int,
        assignment: GpuAssignment | None = None,
    ) -> dict[str, str]:
        """The daemon's environment, the spec's env, and the markers that identify the engine."""
        env = dict(os.environ)
        env.update(spec.env)
        if "HF_HUB_OFFLINE" not in env and self.model_is_local(spec, settings):
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

    def base_url(self, port: int) -> str:
        """Where OpenAI clients of the engine point (the `/v1` root)."""
        return f"http://{ENGINE_HOST}:{port}/v1"

    def served_model_names(self, spec: EngineSpec) -> tuple[str, ...]:
        """The `model` values requests to the engine name."""
        return (spec.name if looks_like_path(spec.model) else spec.model,)

    def endpoints(self, spec: EngineSpec) -> tuple[str, ...]:
        """The OpenAI endpoints the engine serves."""
        return EMBEDDING_ENDPOINTS if spec.kind == "embedding" else CHAT_ENDPOINTS

    def probe_host(self, spec: EngineSpec) -> str:
        """Where the daemon's health probe connects (engines bind the loopback address)."""
        return ENGINE_HOST

    def probe_accepts(self, status: int) -> bool:
        """Whether an answer of `status` to the health probe means healthy."""
        if self.health_status is None:
            return 200 <= status < 300
        return status == self.health_status
