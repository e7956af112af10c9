"""`/v1/gateway/openai/...`: the dashboard's Playground reaches the gateway through the API
port (one origin, one session), forwarded to gateway.host:port and streamed back chunk by
chunk as the gateway sends them (SSE stays SSE). A client that goes away closes the upstream
request, so the gateway cancels the engine's work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sagellmd.api.body import parse_json_body
from sagellmd.api.context import ApiContext
from sagellmd.api.long_poll import client_gone
from sagellmd.errors import BadInputError, ConflictError, PayloadTooLargeError, SagellmError

PREFIX = "/v1/gateway/openai"
# The gateway's own limit is 64 MiB; a Playground request is a chat or a few texts.
MAX_RELAY_BODY_BYTES = 16 * 1024 * 1024
# Headers of the gateway's answer the client needs (the rest are hop-by-hop or the relay's).
PASSED_BACK = ("content-type", "x-request-id", "retry-after", "cache-control")
CONNECT_TIMEOUT_S = 5.0
# Nobody reads it; it marks the request in the API's metrics (nginx's "client closed").
CLIENT_GONE = 499


class GatewayUnreachableError(SagellmError):
    code = "gateway_unreachable"
    http_status = 502


async def _body(request: Request) -> bytes:
    """The request body, checked to be a JSON object (every relayed POST takes one)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_RELAY_BODY_BYTES:
            raise PayloadTooLargeError(
                f"body: larger than the relay's limit of {MAX_RELAY_BODY_BYTES} bytes"
            )
    if not isinstance(parse_json_body(raw) if raw.strip() else None, dict):
        raise BadInputError("body: must be a JSON object (an OpenAI request body)")
    return raw


def _upstream_headers(request: Request, ctx: ApiContext) -> dict[str, str]:
    # identity: aiohttp would ask for gzip, and the client may not take it.
    headers = {"accept": request.headers.get("accept", "*/*"), "accept-encoding": "identity"}
    for name in ("content-type", "x-request-id"):
        if name in request.headers:
            headers[name] = request.headers[name]
    keys = ctx.settings.gateway_api_keys
    if keys:
        headers["authorization"] = f"Bearer {keys[0]}"
    return headers


async def _send_unless_gone(
    request: Request, sending: Coroutine[Any, Any, aiohttp.ClientResponse]
) -> aiohttp.ClientResponse | None:
    """The gateway's answer head, or None if the client left first (a request can wait in
    the gateway's queue for a while, with no byte to stream that would notice)."""
    task = asyncio.ensure_future(sending)
    gone = asyncio.ensure_future(client_gone(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def relay(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    settings = ctx.settings
    body = await _body(request) if request.method == "POST" else None
    if not settings.gateway_enabled:
        raise ConflictError("the gateway is disabled; set gateway.enabled: true in config.yaml")
    url = settings.gateway_url + request.url.path.removeprefix(PREFIX)
    if request.url.query:
        url += f"?{request.url.query}"
    # No total or read timeout: a stream lasts as long as the model writes.
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
        auto_decompress=False,
    )
    try:
        upstream = await _send_unless_gone(
            request,
            session.request(
                request.method, url, data=body, headers=_upstream_headers(request, ctx)
            ),
        )
        if upstream is None:
            await session.close()  # the gateway drops the request it may still be queueing
            return Response(status_code=CLIENT_GONE)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        await session.close()
        raise GatewayUnreachableError(
            f"the gateway at {settings.gateway_url} is not reachable ({exc or type(exc).__name__});"
            " `sagellm gateway` shows its state"
        ) from None
    except BaseException:
        await session.close()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for data in upstream.content.iter_any():
                yield data
        except aiohttp.ClientError:
            return  # the gateway went away mid-answer: the answer ends here
        finally:
            upstream.close()
            await session.close()

    headers = {name: upstream.headers[name] for name in PASSED_BACK if name in upstream.headers}
    if "content-encoding" in upstream.headers:
        headers["content-encoding"] = upstream.headers["content-encoding"]
    # Proxies between the browser and the daemon must not hold back an event stream.
    headers["x-accel-buffering"] = "no"
    return StreamingResponse(chunks(), status_code=upstream.status, headers=headers)
