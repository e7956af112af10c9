"""Events and generations, with long-polling for `status --watch` and `events -f`."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.body import query_number
from sagellmd.api.context import ApiContext
from sagellmd.api.secrets import generation_for_reader, shows_secrets
from sagellmd.errors import BadInputError, NotFoundError


async def events(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    after = query_number(request, "after", None)
    wait = float(query_number(request, "wait", 0, maximum=60, integer=False) or 0)
    limit = int(query_number(request, "limit", 100, minimum=1, maximum=1000) or 100)
    engine = request.query_params.get("engine") or None
    deadline = time.monotonic() + wait
    while True:
        found = ctx.store.events(int(after) if after is not None else None, limit, engine)
        remaining = deadline - time.monotonic()
        if found or after is None or remaining <= 0 or ctx.hub.closed:
            break
        await ctx.hub.wait(remaining)
    last_id = found[-1].id if found else (int(after) if after is not None else 0)
    return JSONResponse({"events": [event.to_dict() for event in found], "last_id": last_id})


async def generations(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    limit = int(query_number(request, "limit", 50, minimum=1, maximum=1000) or 50)
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
    raw = request.path_params["generation"]
    if not raw.isdigit():
        raise BadInputError(f"generation: must be a number, got {raw!r}")
    record = ctx.store.generation(int(raw))
    if record is None:
        raise NotFoundError(f"no generation {raw}; `sagellm history` lists them")
    return JSONResponse(generation_for_reader(record.to_dict(), shows_secrets(request)))
