"""The Starlette application: routes, auth, and JSON errors for everything."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from sagellmd.api import desired_routes, events_routes, management_routes, read_routes
from sagellmd.api.auth import require_token
from sagellmd.api.context import ApiContext
from sagellmd.api.errors import error_response, sagellm_error_handler
from sagellmd.errors import SagellmError


async def metrics(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    body = generate_latest(ctx.reconciler.world.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", read_routes.healthz, methods=["GET"]),
    Route("/v1/status", read_routes.status, methods=["GET"]),
    Route("/v1/engines", read_routes.list_engines, methods=["GET"]),
    Route("/v1/engines/{engine_id}", read_routes.get_engine, methods=["GET"]),
    Route("/v1/engines/{engine_id}", desired_routes.put_engine, methods=["PUT"]),
    Route("/v1/engines/{engine_id}", desired_routes.delete_engine, methods=["DELETE"]),
    Route("/v1/engines/{engine_id}/restart", desired_routes.restart_engine, methods=["POST"]),
    Route("/v1/engines/{engine_id}/logs", read_routes.engine_logs, methods=["GET"]),
    Route("/v1/presets", desired_routes.list_presets, methods=["GET"]),
    Route("/v1/presets/{name}", desired_routes.get_preset, methods=["GET"]),
    Route("/v1/presets/{name}", desired_routes.put_preset, methods=["PUT"]),
    Route("/v1/presets/{name}", desired_routes.delete_preset, methods=["DELETE"]),
    Route("/v1/events", events_routes.events, methods=["GET"]),
    Route("/v1/generations", events_routes.generations, methods=["GET"]),
    Route("/v1/generations/{generation}", events_routes.generation, methods=["GET"]),
    Route("/v1/gpus", read_routes.gpus, methods=["GET"]),
    Route("/v1/plan", desired_routes.plan_change, methods=["POST"]),
    Route("/v1/management/engines", management_routes.start_engine, methods=["POST"]),
    Route("/v1/management/engines/{engine_id}", management_routes.stop_engine, methods=["DELETE"]),
    Route("/v1/management/status", management_routes.status, methods=["GET"]),
    Route("/v1/rollback", desired_routes.rollback, methods=["POST"]),
]


def _route_template(request: Request) -> str:
    """The route's path template (bounded label values), also for requests refused early."""
    route = request.scope.get("route")
    if route is None:
        for candidate in ROUTES:
            match, _ = candidate.matches(request.scope)
            if match is not Match.NONE:
                route = candidate
                break
    return getattr(route, "path", "unmatched")


class AuthMiddleware(BaseHTTPMiddleware):
    """Checks the token, and counts every request by route and status for /metrics."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        ctx: ApiContext = request.app.state.ctx
        response: Response | None = None
        if request.url.path != "/healthz":
            try:
                require_token(request, ctx.token, ctx.settings.api_host)
            except SagellmError as exc:
                response = error_response(exc.http_status, exc.code, exc.message, exc.details)
        if response is None:
            response = await call_next(request)
        template = _route_template(request)
        ctx.reconciler.world.metrics.api_requests.labels(
            template, request.method, str(response.status_code)
        ).inc()
        return response


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(
            404, "not_found", f"no such endpoint: {request.url.path} (see docs/api.md)"
        )
    if exc.status_code == 405:
        return error_response(
            405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
        )
    return error_response(exc.status_code, "http_error", str(exc.detail))


def create_app(ctx: ApiContext) -> Starlette:
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(AuthMiddleware)],
        exception_handlers={SagellmError: sagellm_error_handler, HTTPException: http_error_handler},
    )
    app.state.ctx = ctx
    return app
