"""The seeds' management API (`/v1/management/...`), kept compatible; engines it makes are
ordinary ad-hoc desired state."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.body import read_json
from sagellmd.api.context import ApiContext
from sagellmd.api.desired_routes import ChangeOptions, answer_change, engine_put_change
from sagellmd.api.read_routes import estimates_for, gpu_summary
from sagellmd.api.secrets import shows_secrets
from sagellmd.api.views import engine_entries
from sagellmd.disaggregated_block import group_of
from sagellmd.errors import BadInputError, SpecError
from sagellmd.schemas.requests import SEED_FIELDS, TEXT, seed_start_body
from sagellmd.schemas.validator import is_valid
from sagellmd.spec import GATEWAY_ENGINE_ID, name_from_model
from sagellmd.store.timestamps import iso

START_BODY = seed_start_body()
SPEC_TO_SEED = {spec: seed for seed, spec in SEED_FIELDS.items()}


def _seed_names(message: str) -> str:
    """Error messages name the fields the caller sent, not our spec's names."""
    field, sep, rest = message.partition(":")
    return f"{SPEC_TO_SEED.get(field, field)}{sep}{rest}" if sep else message


def _unique_id(ctx: ApiContext, model: str) -> str:
    base = name_from_model(model)[:58].strip("-") or "engine"
    taken = {engine.id for engine in ctx.store.desired()} | set(ctx.reconciler.world.instances)
    taken.add(GATEWAY_ENGINE_ID)
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


async def start_engine(request: Request) -> JSONResponse:
    """POST /v1/management/engines: EngineStartRequest -> {"engine_id": ...}."""
    ctx: ApiContext = request.app.state.ctx
    data = await read_json(request)
    if not isinstance(data, dict):
        raise BadInputError("body: must be an EngineStartRequest object")
    unknown = sorted(set(data) - set(START_BODY["properties"]))
    if unknown:
        raise SpecError(
            [
                f"(document): unknown field {', '.join(map(repr, unknown))};"
                f" allowed fields: {', '.join(START_BODY['properties'])}"
            ]
        )
    # The full field checks are the engine spec's (engine_put_change), named back below.
    if not all(is_valid(TEXT, data.get(key)) for key in START_BODY["required"]):
        raise SpecError(["model_id: required; a Hugging Face id or a local path"])
    spec = {SEED_FIELDS[key]: value for key, value in data.items()}
    engine_id = _unique_id(ctx, data["model_id"])
    try:
        result = engine_put_change(ctx, engine_id, spec, ChangeOptions())
    except SpecError as exc:
        raise SpecError([_seed_names(message) for message in exc.errors]) from None
    body = answer_change(ctx, result, engine_id=engine_id)
    return JSONResponse(body, status_code=201)


async def stop_engine(request: Request) -> JSONResponse:
    """DELETE /v1/management/engines/{engine_id}: the engine leaves the desired state."""
    ctx: ApiContext = request.app.state.ctx
    engine_id = request.path_params["engine_id"]
    result = ctx.store.change_delete_engine(engine_id, f"management delete {engine_id}")
    return JSONResponse(answer_change(ctx, result, engine_id=engine_id, stopped=True))


def _instance_entry(instance: Any) -> dict[str, Any]:
    return {
        "instance_id": instance.engine_id,
        # An instance of a disaggregated engine belongs to that engine.
        "engine_id": group_of(instance.engine_id) or instance.engine_id,
        "state": instance.state.value,
        "pid": instance.pid,
        "port": instance.port,
        "host": "127.0.0.1",
        "gpus": list(instance.gpus),
        "started_at": iso(instance.started_at),
        "restarts": instance.restarts,
    }


async def status(request: Request) -> JSONResponse:
    """GET /v1/management/status: GPUs, engines (desired + observed) and instances."""
    ctx: ApiContext = request.app.state.ctx
    desired = ctx.store.desired()
    instances = ctx.engine_instances()
    return JSONResponse(
        {
            "gpus": gpu_summary(ctx),
            "engines": engine_entries(
                desired, instances, estimates_for(ctx, desired), shows_secrets(request)
            ),
            "instances": [_instance_entry(instances[key]) for key in sorted(instances)],
        }
    )
