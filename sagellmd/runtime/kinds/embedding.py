"""The `embedding` kind: sagellm's own embedding server (sagellmd.engines.embedding)."""

from __future__ import annotations

from sagellmd.models.resolve import EngineModel, local_copy_for
from sagellmd.runtime.kinds.base import ENGINE_HOST, EngineSettings, GpuAssignment, RuntimeKind
from sagellmd.spec import EngineSpec


class EmbeddingKind(RuntimeKind):
    name = "embedding"
    default_command = ("python", "-m", "sagellmd.engines.embedding")
    downloads_models = True
    # A sentence-transformers model loads in seconds to a minute or two. `kind: llm` on this
    # runtime is a mistake the spec allows; it keeps the llm figure it has always had.
    startup_timeout_s = {"embedding": 180.0, "llm": 900.0}

    def model(self, spec: EngineSpec, settings: EngineSettings) -> EngineModel:
        local = local_copy_for(spec, settings)
        if local is None or local.source != "models.paths":
            # The embedding engine serves under its --model and has no --served-model-name, so
            # a path would break clients that send the id. It finds the hub cache and the
            # packaged MiniLM by itself (offline too); only a models.paths directory needs it.
            return EngineModel(spec.model)
        return EngineModel(str(local.path))

    def flags(
        self,
        spec: EngineSpec,
        model: EngineModel,
        port: int,
        assignment: GpuAssignment | None,
        host: str = ENGINE_HOST,
    ) -> list[str]:
        device = "cuda" if assignment is not None else "cpu"
        return [
            "--model",
            model.argument,
            "--host",
            host,
            "--port",
            str(port),
            "--device",
            device,
        ]
