"""The `gateway` kind: sagellm's own OpenAI-compatible gateway (python -m sagellmd.gateway).

Only the daemon declares an engine of this kind (reconcile/gateway_engine.py); its spec's env
carries the bind host, the daemon's URL and the settings JSON, so a change of any of them
changes the spec hash and restarts the gateway, and an unchanged one is adopted as it runs.
"""

from __future__ import annotations

from sagellmd.gpu.estimate import EstimateSettings, MemoryEstimate
from sagellmd.models.resolve import EngineModel
from sagellmd.runtime.kinds.base import ENGINE_HOST, EngineSettings, GpuAssignment, RuntimeKind
from sagellmd.spec import EngineSpec

HOST_VARIABLE = "SAGELLM_GATEWAY_HOST"
DAEMON_URL_VARIABLE = "SAGELLM_DAEMON_URL"
SETTINGS_VARIABLE = "SAGELLM_GATEWAY_SETTINGS"
# Addresses that accept connections on every interface, loopback included.
WILDCARDS = {"0.0.0.0": ENGINE_HOST, "::": "::1", "": ENGINE_HOST}


class GatewayKind(RuntimeKind):
    name = "gateway"
    default_command = ("python", "-m", "sagellmd.gateway")
    health_path = "/health"

    def wants_gpu(self, spec: EngineSpec) -> bool:
        return False

    def estimate_gpu_memory(self, spec: EngineSpec, settings: EstimateSettings) -> MemoryEstimate:
        raise AssertionError("the gateway reserves no GPU")  # wants_gpu is False

    def model(self, spec: EngineSpec, settings: EngineSettings) -> EngineModel:
        return EngineModel(spec.model)

    def missing_model(self, spec: EngineSpec, settings: EngineSettings) -> str | None:
        return None  # it serves no model of its own

    def model_is_local(self, spec: EngineSpec, settings: EngineSettings) -> bool:
        return False

    def host(self, spec: EngineSpec) -> str:
        return spec.env.get(HOST_VARIABLE, ENGINE_HOST)

    def flags(
        self,
        spec: EngineSpec,
        model: EngineModel,
        port: int,
        assignment: GpuAssignment | None,
        host: str = ENGINE_HOST,
    ) -> list[str]:
        daemon_url = spec.env.get(DAEMON_URL_VARIABLE, "")
        return ["--host", self.host(spec), "--port", str(port), "--daemon-url", daemon_url]

    def probe_host(self, spec: EngineSpec) -> str:
        host = self.host(spec)
        return WILDCARDS.get(host, host)

    def served_model_names(self, spec: EngineSpec) -> tuple[str, ...]:
        return ()

    def endpoints(self, spec: EngineSpec) -> tuple[str, ...]:
        return ()
