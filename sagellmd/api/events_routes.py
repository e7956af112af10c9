"""Events and generations, with long-polling for `status --watch` and `events -f`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.body import path_integer, query_bool, query_parameter
from sagellmd.api.context import ApiContext
from sagellmd.api.long_poll import long_poll
from sagellmd.api.secrets import generation_for_reader, shows_secrets
from sagellmd.errors import NotFoundError


async def events(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    after = query_parameter(request, "after", None)
    wait = float(query_parameter(request, "wait", 0) or 0)
    limit = int(query_parameter(request, "limit", 100) or 100)
    engine = request.query_params.get("engine") or None
    # `load`: also answer when the gateway's in-flight or queued counts change, which are
    # no events (they change many times a second) but show in status.
    follow_load = query_bool(request, "load", False)
    load_seen = ctx.gateway_activity.load_version
    found, load_version = await long_poll(
        request,
        ctx.hub,
        wait,
        lambda: (
            ctx.store.events(int(after) if after is not None else None, limit, engine),
            ctx.gateway_activity.load_version,
        ),
        lambda read: bool(read[0]) or after is None or (follow_load and read[1] != load_seen),
    )
    last_id = found[-1].id if found else (int(after) if after is not None else 0)
    answer: dict[str, Any] = {"events": [event.to_dict() for event in found], "last_id": last_id}
    if follow_load:
        answer["load_changed"] = load_version != load_seen
    return JSONResponse(answer)


async def generations(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    limit = int(query_parameter(request, "limit", 50) or 50)
    secrets = shows_secrets(request)
    return JSONResponse(
        {
            "generations": [
                generation_for_reader(record.to_dict(), secrets)
                for record in ctx.store.generations(limit)
            ]
        }
    )


async def generation(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    number = path_integer(request, "generation", "a generation number")
    record = ctx.store.generation(number)
    if record is None:
        raise NotFoundError(f"no generation {number}; `sagellm history` lists them")
    return JSONResponse(generation_for_reader(record.to_dict(), shows_secrets(request)))
