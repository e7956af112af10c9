"""Endpoints that edit the desired state: ad-hoc engines, presets, restarts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.body import NO_BODY, query_bool, read_json
from sagellmd.api.context import ApiContext
from sagellmd.api.pd_checks import check_gpus_for_sets
from sagellmd.api.port_checks import check_fixed_ports
from sagellmd.api.read_routes import find_engine
from sagellmd.api.secrets import preset_for_reader, shows_secrets
from sagellmd.errors import BadInputError, NotFoundError, SpecError
from sagellmd.presets import catalogue, find_preset
from sagellmd.runtime.kinds import check_spec, startup_timeout_for
from sagellmd.schemas.requests import OBJECT, ROLLBACK_BODY, plan_variants
from sagellmd.schemas.validator import is_valid
from sagellmd.spec import (
    NAME_RULE,
    EngineSpec,
    Preset,
    check_runtime_known,
    is_valid_name,
    parse_engine,
    parse_preset,
    reserved_engine_id_problem,
)
from sagellmd.store.repository import ChangeResult
from sagellmd.store.timestamps import iso


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


@dataclass(frozen=True)
class ChangeOptions:
    """`?dry_run=true` changes nothing; `?rollback=false` keeps a failed rollout as it is."""

    dry_run: bool = False
    rollback: bool = True

    @classmethod
    def of(cls, request: Request) -> ChangeOptions:
        return cls(query_bool(request, "dry_run", False), query_bool(request, "rollback", True))

    def store_options(self) -> dict[str, bool]:
        return {"dry_run": self.dry_run, "auto_rollback": self.rollback}


def answer_change(ctx: ApiContext, result: ChangeResult, **extra: Any) -> dict[str, Any]:
    """The plan the change makes the loop carry out (a dry run: would carry out)."""
    if result.generation is None:
        plan = ctx.reconciler.plan_for(result.desired)
        generation = ctx.store.current_generation()
        return {"dry_run": True, "generation": generation, **extra, "plan": plan.to_list()}
    ctx.hub.notify()
    ctx.reconciler.wake()
    plan = ctx.reconciler.current_plan()
    return {"generation": result.generation, **extra, "plan": plan.to_list()}


def engine_put_change(
    ctx: ApiContext, engine_id: str, data: Any, options: ChangeOptions
) -> ChangeResult:
    _check_name(engine_id, "engine id")
    reserved = reserved_engine_id_problem(engine_id)
    if reserved:
        raise BadInputError(reserved, {"field": "engine_id"})
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
    spec = parse_engine({**data, "name": engine_id}, startup_timeouts=startup_timeout_for)
    check_runtime_known(spec, ctx.settings.runtimes, engine_id)
    check_spec(spec, engine_id)
    check_gpus_for_sets({engine_id: spec}, ctx.reconciler.world.inventory)
    _check_ports(ctx, {engine_id: spec})
    return ctx.store.change_put_engine(
        engine_id, spec, f"engine put {engine_id}", **options.store_options()
    )


def preset_set_change(
    ctx: ApiContext, name: str, data: Any, options: ChangeOptions
) -> ChangeResult:
    _check_name(name, "preset name")
    preset, source = _preset_from_body(ctx, name, data)
    for index, spec in enumerate(preset.engines):
        check_runtime_known(spec, ctx.settings.runtimes, f"engines[{index}]")
        check_spec(spec, f"engines[{index}]")
    check_gpus_for_sets(
        {f"engines[{index}]": spec for index, spec in enumerate(preset.engines)},
        ctx.reconciler.world.inventory,
    )
    specs = {f"{name}.{spec.name}": spec for spec in preset.engines}
    _check_ports(ctx, specs, preset=name)
    return ctx.store.change_set_preset(
        preset, source, f"preset set {name}", **options.store_options()
    )


def _check_ports(ctx: ApiContext, specs: dict[str, EngineSpec], preset: str | None = None) -> None:
    desired = ctx.store.desired()
    # Setting a preset replaces all its engines: the ones it no longer lists leave.
    leaving = {e.id for e in desired if preset is not None and e.preset == preset} - set(specs)
    check_fixed_ports(
        specs,
        ctx.settings.api_port,
        ctx.reconciler.world.instances,
        {engine.id for engine in desired if engine.spec.port is None},
        leaving,
        ctx.settings.gateway_port if ctx.settings.gateway_enabled else None,
    )


def _check_name(value: str, what: str) -> None:
    if not is_valid_name(value):
        raise BadInputError(f"{what} {value!r}: {NAME_RULE}")


async def put_engine(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    engine_id = request.path_params["engine_id"]
    options = ChangeOptions.of(request)
    result = engine_put_change(ctx, engine_id, await read_json(request), options)
    if options.dry_run:
        return JSONResponse(answer_change(ctx, result))
    # A PUT carries the token (mutations need it): it may read back the env it sent.
    body = answer_change(ctx, result, engine=find_engine(ctx, engine_id, secrets=True))
    return JSONResponse(body, status_code=201 if result.created else 200)


async def delete_engine(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    engine_id = request.path_params["engine_id"]
    options = ChangeOptions.of(request)
    result = ctx.store.change_delete_engine(
        engine_id, f"engine delete {engine_id}", **options.store_options()
    )
    return JSONResponse(answer_change(ctx, result))


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
    for name, entry in catalogue(ctx.settings.home, startup_timeout_for).items():
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
        document = preset_for_reader(document, shows_secrets(request))
        return JSONResponse({"name": name, "source": source, "active": True, "document": document})
    entry = find_preset(name, ctx.settings.home, startup_timeout_for)
    document = preset_for_reader(entry.preset.to_dict(), shows_secrets(request))
    return JSONResponse(
        {"name": name, "source": entry.source, "active": False, "document": document}
    )


def _preset_from_body(ctx: ApiContext, name: str, data: Any) -> tuple[Preset, str]:
    if data is NO_BODY:
        entry = find_preset(name, ctx.settings.home, startup_timeout_for)
        return entry.preset, entry.source
    if not isinstance(data, dict):
        raise SpecError(
            [f"body: must be a preset document (a JSON object), got {type(data).__name__}"]
        )
    preset = parse_preset(data, startup_timeout_for)
    if preset.name != name:
        raise SpecError(
            [f"name: must equal the preset name in the path ({name!r}), got {preset.name!r}"]
        )
    return preset, "api"


async def put_preset(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    name = request.path_params["name"]
    options = ChangeOptions.of(request)
    data = await read_json(request, required=False, yaml_ok=True)
    result = preset_set_change(ctx, name, data, options)
    return JSONResponse(answer_change(ctx, result, preset=name))


async def delete_preset(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    name = request.path_params["name"]
    options = ChangeOptions.of(request)
    result = ctx.store.change_unset_preset(name, f"preset unset {name}", **options.store_options())
    return JSONResponse(answer_change(ctx, result, preset=name))


# The body check looks only as deep as an object for `spec` and `document`: parse_engine and
# parse_preset check them, with messages that name the field.
PLAN_BODIES = plan_variants(OBJECT, OBJECT)


def _check_plan_body(data: Any) -> str:
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("change"), str)
        or data["change"] not in PLAN_BODIES
    ):
        kinds = ", ".join(PLAN_BODIES)
        raise BadInputError(f"change: must be one of {kinds}, got {data!r:.80}")
    schema = PLAN_BODIES[data["change"]]
    required = set(schema["required"])
    optional = set(schema["properties"]) - required
    missing = sorted(required - set(data))
    unknown = sorted(set(data) - required - optional)
    if missing or unknown:
        raise BadInputError(
            f"body: {data['change']} needs fields {', '.join(sorted(required))}"
            + (f" (optional: {', '.join(sorted(optional))})" if optional else "")
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    properties = schema["properties"]
    for key in ("name", "id"):
        if key in data and not is_valid(properties[key], data[key]):
            raise BadInputError(f"{key}: must be an engine or preset name, got {data[key]!r:.80}")
    for key in ("document", "spec"):
        if key in data and not is_valid(properties[key], data[key]):
            raise BadInputError(f"{key}: must be a JSON object, got {type(data[key]).__name__}")
    return data["change"]


async def plan_change(request: Request) -> JSONResponse:
    """POST /v1/plan: the plan a proposed change would produce; nothing is changed."""
    ctx = _ctx(request)
    data = await read_json(request)
    change = _check_plan_body(data)
    options = ChangeOptions(dry_run=True)
    if change == "preset_set":
        document = data.get("document", NO_BODY)
        result = preset_set_change(ctx, str(data["name"]), document, options)
    elif change == "preset_unset":
        result = ctx.store.change_unset_preset(str(data["name"]), "plan", dry_run=True)
    elif change == "engine_put":
        result = engine_put_change(ctx, str(data["id"]), data["spec"], options)
    else:
        result = ctx.store.change_delete_engine(str(data["id"]), "plan", dry_run=True)
    return JSONResponse(answer_change(ctx, result, change=change))


async def rollback(request: Request) -> JSONResponse:
    """POST /v1/rollback {"to": N}: a new generation equal to N (default: last healthy)."""
    ctx = _ctx(request)
    data = await read_json(request, required=False)
    data = {} if data is NO_BODY else data
    fields = ROLLBACK_BODY["properties"]
    if not isinstance(data, dict) or set(data) - set(fields):
        raise BadInputError('body: must be {"to": GENERATION} or empty (the last healthy one)')
    current = ctx.store.current_generation()
    if "to" not in data:
        target = ctx.store.last_healthy_before(current)
        if target == 0:
            raise NotFoundError(
                f"no healthy generation before {current} to roll back to;"
                " give one with `sagellm rollback N` (`sagellm history` lists them)"
            )
    else:
        target = data["to"]
        if not is_valid(fields["to"], target):
            raise BadInputError(f"to: must be a generation number >= 0, got {target!r}")
        # JSON Schema counts 2.0 as an integer; the store wants 2.
        target = int(target)
        if target > current:
            raise NotFoundError(f"no generation {target}; the newest is {current}")
    options = ChangeOptions.of(request)
    result = ctx.store.restore_generation(
        target, f"rollback to {target}", dry_run=options.dry_run, auto_rollback=False
    )
    return JSONResponse(answer_change(ctx, result, to=target))
