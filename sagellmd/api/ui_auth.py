"""The dashboard's session on API requests: the cookie in place of the bearer token, with
CSRF proof on mutations; and `POST /v1/ui/codes`, the one-time sign-in codes."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.auth import MUTATING_METHODS, require_token
from sagellmd.api.context import ApiContext
from sagellmd.api.ui_sessions import CSRF_HEADER, Session, cookie_name, csrf_for
from sagellmd.api.ui_sessions import same_origin_problem as origin_problem
from sagellmd.errors import SagellmError
from sagellmd.store.timestamps import iso

_SCOPE_KEY = "sagellm.ui_session"
_UNCHECKED = object()


class CsrfRefusedError(SagellmError):
    """A mutation carried the session cookie but not the proof that the dashboard sent it."""

    code = "csrf_refused"
    http_status = 403
    exit_code = 2


def own_origin(request: Request) -> str:
    """scheme://Host as the client addressed the daemon (through an SSH tunnel too)."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def request_session(request: Request) -> Session | None:
    """The valid session the request's cookie carries (checked once per request)."""
    found = request.scope.get(_SCOPE_KEY, _UNCHECKED)
    if found is _UNCHECKED:
        ctx: ApiContext = request.app.state.ctx
        cookie = request.cookies.get(cookie_name(ctx.settings.api_port))
        found = ctx.ui.check(cookie, ctx.token.current())
        request.scope[_SCOPE_KEY] = found
    return found  # type: ignore[return-value]


def csrf_problem(request: Request, session: Session, token: str) -> str | None:
    """Why this cookie-carrying mutation may be a forgery from another site, or None."""
    given = request.headers.get(CSRF_HEADER, "")
    if not given:
        return (
            "a change made with the dashboard's session cookie needs the X-Sagellm-CSRF header"
            " (the csrf value of GET /ui/session); scripts use the bearer token instead"
        )
    if not hmac.compare_digest(given.encode(), csrf_for(token, session.sid).encode()):
        return "the X-Sagellm-CSRF header does not belong to this session; reload the dashboard"
    return origin_problem(
        request.headers.get("origin"), own_origin(request), request.headers.get("sec-fetch-site")
    )


def authorize_api(request: Request, ctx: ApiContext, always: bool) -> None:
    """The bearer token as before; or, on /v1 paths without an Authorization header, a
    valid session cookie (with CSRF proof for a mutation). Raises what refuses it."""
    if request.url.path.startswith("/v1/") and "authorization" not in request.headers:
        session = request_session(request)
        if session is not None:
            if request.method in MUTATING_METHODS:
                problem = csrf_problem(request, session, ctx.token.current())
                if problem is not None:
                    raise CsrfRefusedError(problem)
            return
    require_token(request, ctx.token, ctx.settings.api_host, always)


async def create_code(request: Request) -> JSONResponse:
    """POST /v1/ui/codes: a one-time sign-in code and the URL that carries it."""
    ctx: ApiContext = request.app.state.ctx
    code, expires_at = ctx.ui.codes.issue()
    return JSONResponse(
        {
            "code": code,
            "url": f"{own_origin(request)}/ui/?code={code}",
            "expires_at": iso(expires_at),
        }
    )
