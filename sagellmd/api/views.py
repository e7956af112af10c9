"""JSON shapes of engines and status, built from desired and observed state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagellmd.api.pd_views import group_entry
from sagellmd.api.secrets import spec_for_reader
from sagellmd.desired import DesiredEngine
from sagellmd.gpu.estimate import GIB, MemoryEstimate
from sagellmd.instance import Instance, InstanceState
from sagellmd.pd_expand import expand_engine
from sagellmd.runtime.kinds import kind_for
from sagellmd.spec import EngineSpec
from sagellmd.store.timestamps import iso


def _estimate(estimate: MemoryEstimate | str | None) -> dict[str, Any] | None:
    if estimate is None:
        return None
    if isinstance(estimate, str):
        return {"gb": None, "source": None, "detail": estimate}
    return {
        "gb": round(estimate.per_gpu_gb, 2),
        "source": estimate.source,
        "detail": estimate.detail,
    }


def _address(spec: EngineSpec | None, port: int | None) -> dict[str, Any] | None:
    """Where OpenAI clients reach the engine, as its runtime kind says."""
    if spec is None or port is None:
        return None
    kind = kind_for(spec.runtime)
    return {
        "base_url": kind.base_url(port),
        "models": list(kind.served_model_names(spec)),
        "endpoints": list(kind.endpoints(spec)),
    }


def engine_entry(
    engine_id: str,
    desired: DesiredEngine | None,
    instance: Instance | None,
    estimate: MemoryEstimate | str | None = None,
    secrets: bool = False,
    all_instances: Mapping[str, Instance] | None = None,
    estimates: Mapping[str, MemoryEstimate | str] | None = None,
) -> dict[str, Any]:
    """One engine as `/v1/status` and `/v1/engines` show it; env values only with `secrets`.

    A disaggregated engine's entry holds its instances' (from `all_instances`)."""
    if desired is not None and desired.spec.disaggregated is not None:
        return group_entry(
            _entry(engine_id, desired, None, estimate, secrets),
            desired,
            all_instances or {},
            lambda member_id, member, instance: engine_entry(
                member_id, member, instance, (estimates or {}).get(member_id), secrets
            ),
        )
    return _entry(engine_id, desired, instance, estimate, secrets)


def _entry(
    engine_id: str,
    desired: DesiredEngine | None,
    instance: Instance | None,
    estimate: MemoryEstimate | str | None,
    secrets: bool,
) -> dict[str, Any]:
    spec = desired.spec if desired else None
    holds = instance is not None and instance.holds_gpus
    last_exit = None
    if instance is not None and instance.exited_at is not None:
        last_exit = {
            "code": instance.last_exit_code,
            "signal": instance.last_exit_signal,
            "at": iso(instance.exited_at),
        }
    state = instance.state.value if instance else InstanceState.PENDING.value
    message = instance.message if instance else "waiting for the reconcile loop"
    if desired is None and instance is not None:
        message = f"being removed: {instance.message}"
    invalid = desired.invalid if desired else None
    port = instance.port if instance else (spec.port if spec else None)
    if invalid:
        message = f"stored spec is invalid, declare the engine again ({invalid}); {message}"
    return {
        "id": engine_id,
        "preset": desired.preset if desired else None,
        "name": spec.name if spec else engine_id.rsplit(".", 1)[-1],
        "kind": spec.kind if spec else None,
        "model": spec.model if spec else None,
        "runtime": spec.runtime if spec else None,
        "label": spec.label if spec else None,
        "desired": desired is not None,
        "invalid": invalid,
        "state": state,
        "pid": instance.pid if instance else None,
        "port": port,
        "address": _address(spec, port),
        "gpus": list(instance.gpus) if holds and instance else [],
        "gpu_memory_gb": round(instance.gpu_bytes / GIB, 2) if holds and instance else None,
        "memory_estimate": _estimate(estimate),
        "restarts": instance.restarts if instance else 0,
        "retiring_pid": instance.retiring.pid if instance and instance.retiring else None,
        # The cluster node it runs on; null on the daemon's own machine.
        "node": instance.node if instance else None,
        "message": message,
        "generation": instance.generation if instance else None,
        "started_at": iso(instance.started_at) if instance else None,
        "ready_at": iso(instance.ready_at) if instance else None,
        "last_exit": last_exit,
        "spec_hash": spec.spec_hash if spec else None,
        "running_spec_hash": instance.spec_hash if instance else None,
        "metadata": dict(spec.metadata) if spec else {},
        "spec": spec_for_reader(spec.to_dict(), secrets) if spec else None,
    }


def engine_entries(
    desired: list[DesiredEngine],
    instances: Mapping[str, Instance],
    estimates: Mapping[str, MemoryEstimate | str] | None = None,
    secrets: bool = False,
) -> list[dict[str, Any]]:
    by_id = {engine.id: engine for engine in desired}
    estimates = estimates or {}
    # The instances of a disaggregated engine show under it, not beside it.
    members = {member.id for engine in desired for member in expand_engine(engine)} - set(by_id)
    return [
        engine_entry(
            engine_id,
            by_id.get(engine_id),
            instances.get(engine_id),
            estimates.get(engine_id),
            secrets,
            instances,
            estimates,
        )
        for engine_id in sorted((set(by_id) | set(instances)) - members)
    ]
