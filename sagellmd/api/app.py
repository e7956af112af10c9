"""The Starlette application: routes, auth, and JSON errors for everything."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from sagellmd.api.body import check_query_not_repeated
from sagellmd.api.context import ApiContext
from sagellmd.api.errors import error_response, sagellm_error_handler
from sagellmd.api.openapi import openapi_document
from sagellmd.api.route_table import ENDPOINTS, Handler
from sagellmd.api.ui_auth import authorize_api
from sagellmd.api.ui_pages import UI_ROUTES, is_ui_path
from sagellmd.errors import SagellmError
from sagellmd.spec import GATEWAY_RUNTIME
from sagellmd.store.failures import is_storage_failure, storage_error


def _dispatch(endpoints: dict[str, Handler]) -> Handler:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return endpoint


def _routes() -> list[Route]:
    """One Route per path, so a 405 names every method the path supports (Allow)."""
    by_path: dict[str, dict[str, Handler]] = {}
    for endpoint in ENDPOINTS:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint.handler
    return [
        Route(path, _dispatch(methods), methods=list(methods)) for path, methods in by_path.items()
    ]


ROUTES = _routes()
# The dashboard's pages check their session themselves (a page answers with a sign-in form).
ALL_ROUTES = [*ROUTES, *UI_ROUTES]
# Reads that need the token on any bind (fixed paths, no parameters).
TOKEN_READS = frozenset(e.path for e in ENDPOINTS if e.doc.token and not e.mutating)


def _route_template(request: Request) -> str:
    """The route's path template (bounded label values), also for requests refused early."""
    route = request.scope.get("route")
    if route is None:
        for candidate in ALL_ROUTES:
            match, _ = candidate.matches(request.scope)
            if match is not Match.NONE:
                route = candidate
                break
    return getattr(route, "path", "unmatched")


class AuthMiddleware(BaseHTTPMiddleware):
    """Checks the token (or the dashboard's session), and counts every request by route and
    status for /metrics."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        ctx: ApiContext = request.app.state.ctx
        response: Response | None = None
        try:
            path = request.url.path
            if path != "/healthz" and not is_ui_path(path):
                authorize_api(request, ctx, path in TOKEN_READS)
            check_query_not_repeated(request)
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
        response = error_response(
            405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
        )
        response.headers.update(exc.headers or {})  # the Allow header RFC 9110 asks for
        return response
    return error_response(exc.status_code, "http_error", str(exc.detail))


async def storage_error_handler(request: Request, exc: Exception) -> Response:
    """A full or read-only disk is the machine's problem: 503 naming it, not a bare 500."""
    if not is_storage_failure(exc):
        raise exc
    ctx: ApiContext = request.app.state.ctx
    error = storage_error(exc, ctx.settings.db_path)
    return error_response(error.http_status, error.code, error.message, error.details)


def create_app(ctx: ApiContext) -> Starlette:
    app = Starlette(
        routes=ALL_ROUTES,
        middleware=[Middleware(AuthMiddleware)],
        exception_handlers={
            SagellmError: sagellm_error_handler,
            HTTPException: http_error_handler,
            OperationalError: storage_error_handler,
            sqlite3.OperationalError: storage_error_handler,
            OSError: storage_error_handler,
        },
    )
    app.state.ctx = ctx
    # The gateway runtime is the daemon's own: no user spec may name it.
    runtimes = sorted(name for name in ctx.settings.runtimes if name != GATEWAY_RUNTIME)
    app.state.openapi = openapi_document(runtimes)
    return app
