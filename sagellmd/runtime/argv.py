"""Argv and environment of an engine process, as its runtime kind builds them."""

from __future__ import annotations

from sagellmd.config import Settings
from sagellmd.disaggregation import INSTANCE_SEPARATOR
from sagellmd.runtime.kinds import kind_for
from sagellmd.runtime.kinds.base import ENGINE_HOST, GpuAssignment
from sagellmd.runtime.kinds.vllm_kv_transfer import (
    KvTransferLaunch,
    kv_transfer_launch,
    side_ports_needed,
)
from sagellmd.spec import EngineSpec

__all__ = ["ENGINE_HOST", "GpuAssignment", "build_argv", "build_env", "side_ports_for"]


def side_ports_for(spec: EngineSpec) -> int:
    """How many KV side-channel ports the engine's process binds (0: not an instance)."""
    if spec.pd_role is None or spec.pd_connector is None:
        return 0
    return side_ports_needed(spec.pd_connector, spec.pd_role, spec.tensor_parallel)


def _kv_launch(
    spec: EngineSpec, engine_id: str, port: int, side_port: int | None
) -> KvTransferLaunch | None:
    if spec.pd_role is None or spec.pd_connector is None:
        return None
    group = engine_id.rpartition(INSTANCE_SEPARATOR)[0]
    return kv_transfer_launch(
        spec.pd_connector,
        spec.pd_role,
        side_port,
        engine_id=group,
        http_port=port,
        tensor_parallel=spec.tensor_parallel,
    )


def build_argv(
    spec: EngineSpec,
    settings: Settings,
    engine_id: str,
    port: int,
    assignment: GpuAssignment | None = None,
    side_port: int | None = None,
    host: str = ENGINE_HOST,
) -> list[str]:
    """The runtime's command (placeholders filled), its kind's flags, then extra_args.

    A model found on disk is passed as its path, so engines start without the hub. A
    prefill or decode instance gets its --kv-transfer-config before extra_args (`side_port`:
    the first of its side-channel ports).
    """
    argv = kind_for(spec.runtime).argv(spec, settings, engine_id, port, assignment, host)
    launch = _kv_launch(spec, engine_id, port, side_port)
    if launch is None:
        return argv
    cut = len(argv) - len(spec.extra_args)
    return argv[:cut] + list(launch.argv) + argv[cut:]


def build_env(
    spec: EngineSpec,
    settings: Settings,
    engine_id: str,
    port: int,
    assignment: GpuAssignment | None = None,
    side_port: int | None = None,
) -> dict[str, str]:
    """The daemon's environment, the spec's env, and the markers that identify the engine."""
    env = kind_for(spec.runtime).env(spec, settings, engine_id, port, assignment)
    launch = _kv_launch(spec, engine_id, port, side_port)
    if launch is not None:
        env.update(launch.env)
        for key, value in launch.env_defaults.items():
            if key not in spec.env:
                env[key] = value
    return env
