"""The daemon's side of the gateway seam: the route table long-poll, the activity reports,
and the gateway's own state."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sagellmd.api.body import query_parameter, read_json
from sagellmd.api.context import ApiContext
from sagellmd.api.long_poll import long_poll
from sagellmd.api.route_entries import route_entries
from sagellmd.errors import BadInputError
from sagellmd.schemas.requests import GATEWAY_ACTIVITY_BODY
from sagellmd.schemas.validator import Validator
from sagellmd.spec import GATEWAY_ENGINE_ID
from sagellmd.store.timestamps import iso

ACTIVITY_VALIDATOR = Validator(GATEWAY_ACTIVITY_BODY)


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def route_table(ctx: ApiContext) -> dict[str, Any]:
    """The table as it stands now, numbered by ctx.route_versions."""
    entries = route_entries(
        ctx.store.desired(), ctx.reconciler.world.instances, ctx.reconciler.world.engine_host
    )
    return ctx.route_versions.table(entries)


async def routes(request: Request) -> JSONResponse:
    """GET /v1/routes?after=V&wait=S: at once if the version is not V, else when it changes
    (every recorded transition and desired-state change notifies the hub) or after S."""
    ctx = _ctx(request)
    after = query_parameter(request, "after", None)
    wait = float(query_parameter(request, "wait", 0) or 0)
    table = await long_poll(
        request,
        ctx.hub,
        wait,
        lambda: route_table(ctx),
        lambda table: after is None or table["version"] != int(after),
    )
    return JSONResponse(table)


async def activity(request: Request) -> Response:
    """POST /v1/gateway/activity: the gateway's counts; kept in memory, answered 204."""
    ctx = _ctx(request)
    data = await read_json(request)
    errors = sorted(ACTIVITY_VALIDATOR.iter_errors(data), key=lambda e: list(map(str, e.path)))
    if errors:
        first = errors[0]
        where = ".".join(str(part) for part in first.absolute_path) or "body"
        raise BadInputError(
            f"{where}: {first.message}; the body is a gateway activity report"
            " ({pid, started_at, route_version, engines, models, totals}, see docs/api.md)",
            {"field": where},
        )
    if ctx.gateway_activity.receive(data):
        # Long-polls that follow the load (GET /v1/events?load=true: the dashboard) answer.
        ctx.hub.notify()
    # Demand starts engines and an end of load lets them go idle: the loop looks at once.
    ctx.reconciler.wake()
    return Response(status_code=204)


def gateway_section(ctx: ApiContext) -> dict[str, Any]:
    """`{enabled, state, url, pid, totals, reported_at}` for status and GET /v1/gateway."""
    settings = ctx.settings
    instance = ctx.reconciler.world.instances.get(GATEWAY_ENGINE_ID)
    if instance is not None:
        state = instance.state.value
    else:
        state = "absent" if settings.gateway_enabled else "disabled"
    received = ctx.gateway_activity.received_at
    return {
        "enabled": settings.gateway_enabled,
        "state": state,
        "url": settings.gateway_url,
        "pid": instance.pid if instance is not None else None,
        "restarts": instance.restarts if instance is not None else 0,
        "message": instance.message if instance is not None else None,
        "totals": ctx.gateway_activity.totals,
        "reported_at": iso(received) if received is not None else None,
    }


async def gateway(request: Request) -> JSONResponse:
    return JSONResponse(gateway_section(_ctx(request)))
