"""The gateway's ASGI app: its own endpoints, and every other `POST /v1/*` proxied by model."""

from __future__ import annotations

from typing import Any

import orjson

from sagellmd.gateway.settings import GatewaySettings

JSON_HEADERS = [(b"content-type", b"application/json")]


class GatewayApp:
    """A raw ASGI app: no framework between the socket and the proxy (speed)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/health":
            await _answer(send, 200, orjson.dumps({"status": "ok"}))
            return
        await _answer(send, 404, b'{"error": {"message": "not here yet", "code": "not_found"}}')

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Any, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": headers or JSON_HEADERS}
    )
    await send({"type": "http.response.body", "body": body})
