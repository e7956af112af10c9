"""The /ui routes: the dashboard's files behind a session, the one-time code exchange,
sign-in, sign-out and GET /ui/session. Pages, not API: they are not in the OpenAPI document."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sagellmd.api.context import ApiContext
from sagellmd.api.errors import error_response
from sagellmd.api.ui_auth import own_origin, request_session
from sagellmd.api.ui_sessions import (
    SESSION_LIFETIME_S,
    Session,
    cookie_name,
    csrf_for,
    same_origin_problem,
)
from sagellmd.api.ui_signin import USED_CODE, signin_page
from sagellmd.api.ui_static import StaticFiles, accepts_gzip, is_html_path
from sagellmd.shipped_files import ui_dir
from sagellmd.store.timestamps import iso

UI_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under that policy Chromium sends `Origin: null` on the page's own
    # POSTs (the sign-in form, fetch mutations), which the same-origin checks refuse.
    # same-origin still sends nothing to other sites.
    "Referrer-Policy": "same-origin",
}
MAX_FORM_BYTES = 16 * 1024
FILES = StaticFiles(ui_dir())


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def _secured(response: Response) -> Response:
    response.headers.update(UI_HEADERS)
    return response


def _set_cookie(response: Response, ctx: ApiContext, value: str, max_age: int) -> None:
    # Written out, so the attributes read exactly as documented (SameSite=Strict).
    response.headers.append(
        "set-cookie",
        f"{cookie_name(ctx.settings.api_port)}={value}; Max-Age={max_age}; Path=/;"
        " HttpOnly; SameSite=Strict",
    )


def _signed_in(ctx: ApiContext, location: str) -> Response:
    """A new session's cookie, and on to `location`."""
    session = ctx.ui.start()
    response = _secured(Response(status_code=303, headers={"location": location}))
    _set_cookie(response, ctx, session.cookie_value(ctx.token.current()), int(SESSION_LIFETIME_S))
    return response


def _signin(request: Request, next_path: str, error: str | None, status: int = 401) -> Response:
    page = signin_page(next_path, str(_ctx(request).token.path), error)
    return _secured(HTMLResponse(page, status_code=status, headers={"cache-control": "no-store"}))


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path under /ui/ only (no other site, no other path)."""
    if (
        value
        and value.startswith("/ui/")
        and "//" not in value
        and "\\" not in value
        and value.isprintable()
        and len(value) <= 2000
    ):
        return value
    return "/ui/"


def _page_path(request: Request) -> str:
    """This request's /ui path and query, without `code`."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "code"]
    return request.url.path + (f"?{urlencode(kept)}" if kept else "")


async def redirect_root(request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return _secured(Response(status_code=308, headers={"location": f"/ui/{query}"}))


async def page(request: Request) -> Response:
    """GET /ui/<path>: the file, for a session; else the sign-in page or a plain 401."""
    ctx = _ctx(request)
    relative = request.path_params.get("path", "")
    html = is_html_path(relative)
    code = request.query_params.get("code")
    if html and code is not None:
        if ctx.ui.codes.redeem(code):
            return _signed_in(ctx, _page_path(request))
        return _signin(request, safe_next(_page_path(request)), USED_CODE)
    if request_session(request) is None:
        if html:
            return _signin(request, safe_next(_page_path(request)), None)
        return _secured(PlainTextResponse("sign in first: /ui/", status_code=401))
    found = FILES.get(relative)
    if found is None:
        return _secured(PlainTextResponse(f"no such file: {request.url.path}", status_code=404))
    headers = {"cache-control": "no-cache", "etag": found.etag, "vary": "Accept-Encoding"}
    if found.etag in request.headers.get("if-none-match", ""):
        return _secured(Response(status_code=304, headers=headers))
    body = found.body
    if found.gzipped is not None and accepts_gzip(request.headers.get("accept-encoding", "")):
        body = found.gzipped
        headers["content-encoding"] = "gzip"
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        body = b""
    return _secured(Response(body, media_type=found.media_type, headers=headers))


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, or None when it is too big."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def _foreign_origin(request: Request) -> bool:
    """The sign-in and sign-out forms were sent by another site's page."""
    problem = same_origin_problem(
        request.headers.get("origin"), own_origin(request), request.headers.get("sec-fetch-site")
    )
    return problem is not None


async def signin(request: Request) -> Response:
    """POST /ui/signin (form token, next): the right token starts a session."""
    ctx = _ctx(request)
    if _foreign_origin(request):
        return _signin(request, "/ui/", "sign-in refused: the form was sent by another site", 403)
    form = await _form(request)
    if form is None:
        return _signin(request, "/ui/", "the form is too large", 413)
    next_path = safe_next(form.get("next"))
    given = form.get("token", "").strip()
    if given and hmac.compare_digest(given.encode(), ctx.token.current().encode()):
        return _signed_in(ctx, next_path)
    error = "wrong token" if given else "enter the token"
    return _signin(request, next_path, f"{error}; the daemon's token is in {ctx.token.path}")


async def signout(request: Request) -> Response:
    """POST /ui/signout: the session ends here (revoked) and in the browser (cookie gone)."""
    ctx = _ctx(request)
    if _foreign_origin(request):
        return _secured(PlainTextResponse("sign-out refused: sent by another site", 403))
    session: Session | None = request_session(request)
    if session is not None:
        ctx.ui.revoke(session)
    response = _secured(Response(status_code=303, headers={"location": "/ui/"}))
    _set_cookie(response, ctx, "", 0)
    return response


async def session_info(request: Request) -> Response:
    """GET /ui/session: the CSRF value the page sends on mutations, and where things are."""
    ctx = _ctx(request)
    session = request_session(request)
    if session is None:
        response = error_response(
            401, "unauthorized", "no dashboard session; sign in at /ui/ (run `sagellm ui`)"
        )
        return _secured(response)
    settings = ctx.settings
    body = {
        "csrf": csrf_for(ctx.token.current(), session.sid),
        "expires_at": iso(session.expires_at),
        "api": own_origin(request),
        "gateway": {
            "enabled": settings.gateway_enabled,
            "url": settings.gateway_url if settings.gateway_enabled else None,
        },
    }
    return _secured(JSONResponse(body, headers={"cache-control": "no-store"}))


UI_ROUTES = [
    Route("/ui", redirect_root, methods=["GET"]),
    Route("/ui/session", session_info, methods=["GET"]),
    Route("/ui/signin", signin, methods=["POST"]),
    Route("/ui/signout", signout, methods=["POST"]),
    Route("/ui/{path:path}", page, methods=["GET"]),
]


def is_ui_path(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")
