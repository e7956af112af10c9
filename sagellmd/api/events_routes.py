"""Events and generations, with long-polling for `status --watch` and `events -f`."""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.body import path_integer, query_parameter
from sagellmd.api.context import ApiContext
from sagellmd.api.secrets import generation_for_reader, shows_secrets
from sagellmd.errors import NotFoundError


async def client_gone(request: Request) -> None:
    """Returns once the client has closed its connection (the body is read through)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def events(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    after = query_parameter(request, "after", None)
    wait = float(query_parameter(request, "wait", 0) or 0)
    limit = int(query_parameter(request, "limit", 100) or 100)
    engine = request.query_params.get("engine") or None
    deadline = time.monotonic() + wait
    # A client that goes away must not keep its handler (and a connection slot) until
    # the deadline; nothing else would tell the handler.
    gone = asyncio.ensure_future(client_gone(request))
    try:
        while True:
            found = ctx.store.events(int(after) if after is not None else None, limit, engine)
            remaining = deadline - time.monotonic()
            if found or after is None or remaining <= 0 or ctx.hub.closed or gone.done():
                break
            waiter = asyncio.ensure_future(ctx.hub.wait(remaining))
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    last_id = found[-1].id if found else (int(after) if after is not None else 0)
    return JSONResponse({"events": [event.to_dict() for event in found], "last_id": last_id})


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
