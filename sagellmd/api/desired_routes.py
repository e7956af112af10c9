"""Endpoints that edit the desired state: ad-hoc engines, presets, restarts."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.body import read_json
from sagellmd.api.context import ApiContext
from sagellmd.api.read_routes import find_engine
from sagellmd.errors import BadInputError, SpecError
from sagellmd.presets import catalogue, find_preset
from sagellmd.spec import Preset, check_runtime_known, is_valid_name, parse_engine, parse_preset
from sagellmd.store.repository import iso


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def _changed(ctx: ApiContext, generation: int, **extra: Any) -> dict[str, Any]:
    """Wake the loop and answer with the plan it is about to carry out."""
    ctx.hub.notify()
    ctx.reconciler.wake()
    return {"generation": generation, **extra, "plan": ctx.reconciler.current_plan().to_list()}


def _check_name(value: str, what: str) -> None:
    if not is_valid_name(value):
        raise BadInputError(
            f"{what} {value!r}: must be lowercase letters, digits and '-', start and end"
            " alphanumeric, at most 63 chars"
        )


async def put_engine(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    engine_id = request.path_params["engine_id"]
    _check_name(engine_id, "engine id")
    data = await read_json(request)
    if not isinstance(data, dict):
        raise SpecError(
            [f"body: must be a JSON object (an engine spec), got {type(data).__name__}"]
        )
    if "name" in data and data["name"] != engine_id:
        raise SpecError(
            [
                f"name: must equal the engine id in the path ({engine_id!r}),"
                f" got {data['name']!r}; leave it out or make them match"
            ]
        )
    spec = parse_engine({**data, "name": engine_id})
    check_runtime_known(spec, ctx.settings.runtimes, engine_id)
    generation, created = ctx.store.put_engine(engine_id, spec, f"engine put {engine_id}")
    body = _changed(ctx, generation, engine=find_engine(ctx, engine_id))
    return JSONResponse(body, status_code=201 if created else 200)


async def delete_engine(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    engine_id = request.path_params["engine_id"]
    generation = ctx.store.delete_engine(engine_id, f"engine delete {engine_id}")
    return JSONResponse(_changed(ctx, generation))


async def restart_engine(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    engine_id = request.path_params["engine_id"]
    requested_at = ctx.store.request_restart(engine_id)
    ctx.reconciler.world.event(engine_id, "restarting", "restart requested")
    ctx.reconciler.wake()
    return JSONResponse({"engine": engine_id, "requested_at": iso(requested_at)})


def _active_documents(ctx: ApiContext) -> dict[str, tuple[dict[str, Any], str]]:
    return {preset.name: (preset.document, preset.source) for preset in ctx.store.active_presets()}


async def list_presets(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    active = _active_documents(ctx)
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in catalogue(ctx.settings.home).items():
        entries[name] = {
            "name": name,
            "description": entry.preset.description,
            "source": entry.source,
            "active": name in active,
            "engines": [spec.name for spec in entry.preset.engines],
        }
    for name, (document, source) in active.items():
        if name not in entries:
            entries[name] = {
                "name": name,
                "description": document.get("description", ""),
                "source": source,
                "active": True,
                "engines": [engine["name"] for engine in document["engines"]],
            }
    return JSONResponse({"presets": [entries[name] for name in sorted(entries)]})


async def get_preset(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    name = request.path_params["name"]
    active = _active_documents(ctx)
    if name in active:
        document, source = active[name]
        return JSONResponse({"name": name, "source": source, "active": True, "document": document})
    entry = find_preset(name, ctx.settings.home)
    return JSONResponse(
        {"name": name, "source": entry.source, "active": False, "document": entry.preset.to_dict()}
    )


def _preset_from_body(ctx: ApiContext, name: str, data: Any) -> tuple[Preset, str]:
    if data is None:
        entry = find_preset(name, ctx.settings.home)
        return entry.preset, entry.source
    if not isinstance(data, dict):
        raise SpecError(
            [f"body: must be a preset document (a JSON object), got {type(data).__name__}"]
        )
    preset = parse_preset(data)
    if preset.name != name:
        raise SpecError(
            [f"name: must equal the preset name in the path ({name!r}), got {preset.name!r}"]
        )
    return preset, "api"


async def put_preset(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    name = request.path_params["name"]
    _check_name(name, "preset name")
    preset, source = _preset_from_body(ctx, name, await read_json(request, required=False))
    for index, spec in enumerate(preset.engines):
        check_runtime_known(spec, ctx.settings.runtimes, f"engines[{index}]")
    generation = ctx.store.set_preset(preset, source, f"preset set {name}")
    return JSONResponse(_changed(ctx, generation, preset=name))


async def delete_preset(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    name = request.path_params["name"]
    generation = ctx.store.unset_preset(name, f"preset unset {name}")
    return JSONResponse(_changed(ctx, generation, preset=name))
