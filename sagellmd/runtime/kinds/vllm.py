"""The `vllm` kind: vLLM's OpenAI server, sized to its GPU reservation."""

from __future__ import annotations

from sagellmd.models.resolve import EngineModel, has_flag, local_copy_for
from sagellmd.runtime.kinds.base import ENGINE_HOST, EngineSettings, GpuAssignment, RuntimeKind
from sagellmd.spec import EngineSpec


class VllmKind(RuntimeKind):
    name = "vllm"
    default_command = ("python", "-m", "vllm.entrypoints.openai.api_server")
    downloads_models = True
    # vLLM loads the weights, profiles memory and captures CUDA graphs: minutes for a large
    # LLM; an embedding model (--task embed) is small.
    startup_timeout_s = {"llm": 900.0, "embedding": 180.0}
    # --enable-sleep-mode, and VLLM_SERVER_DEV_MODE=1 for the /sleep and /wake_up endpoints.
    supports_sleep = True

    def model(self, spec: EngineSpec, settings: EngineSettings) -> EngineModel:
        local = local_copy_for(spec, settings)
        if local is None:
            return EngineModel(spec.model)
        flags: tuple[str, ...] = ()
        if not has_flag(spec.extra_args, "--served-model-name"):
            # vLLM serves under --model unless told otherwise; clients keep using the id.
            flags = ("--served-model-name", spec.model)
        return EngineModel(str(local.path), flags)

    def served_model_names(self, spec: EngineSpec) -> tuple[str, ...]:
        # --served-model-name takes one or more names (up to the next flag), or NAME=...
        args = list(spec.extra_args)
        for index, arg in enumerate(args):
            if arg.startswith("--served-model-name="):
                return (arg.partition("=")[2],)
            if arg == "--served-model-name":
                names = []
                for name in args[index + 1 :]:
                    if name.startswith("-"):
                        break
                    names.append(name)
                if names:
                    return tuple(names)
        return (spec.model,)

    def flags(
        self,
        spec: EngineSpec,
        model: EngineModel,
        port: int,
        assignment: GpuAssignment | None,
        host: str = ENGINE_HOST,
    ) -> list[str]:
        flags = [
            "--model",
            model.argument,
            "--host",
            host,
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
        if spec.idle_action == "sleep":
            flags.append("--enable-sleep-mode")
        return flags + list(model.extra_flags)

    def env(
        self,
        spec: EngineSpec,
        settings: EngineSettings,
        engine_id: str,
        port: int,
        assignment: GpuAssignment | None = None,
    ) -> dict[str, str]:
        env = super().env(spec, settings, engine_id, port, assignment)
        if spec.idle_action == "sleep":
            # vLLM serves /sleep, /wake_up and /is_sleeping only in its development mode.
            env["VLLM_SERVER_DEV_MODE"] = "1"
        return env
