"""Reading a client's request: its body, bounded, and the fields the gateway routes by."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import orjson

from sagellmd.gateway import errors
from sagellmd.gateway.errors import GatewayError

MAX_BODY_BYTES = 64 * 1024 * 1024


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


class ClientWatch:
    """`async with ClientWatch(receive) as client:` serves a request that the client's
    leaving cancels: a disconnect before `client.done()` (or the block's end) cancels the
    serving task, and the block ends in ClientGone instead of CancelledError."""

    def __init__(self, receive: Any) -> None:
        self._receive = receive
        self._gone = False
        self._done = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def done(self) -> None:
        """The answer is complete: a disconnect from now on cancels nothing."""
        self._done = True

    async def _watch(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self._done:
            self._gone = True
            assert self._task is not None
            self._task.cancel()

    async def __aenter__(self) -> ClientWatch:
        self._task = asyncio.current_task()
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done = True
        assert self._watcher is not None and self._task is not None
        self._watcher.cancel()
        if exc_type is asyncio.CancelledError and self._gone:
            self._task.uncancel()
            raise ClientGone() from None


def parse_request(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_body(f"The request body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise errors.bad_body("The request body must be a JSON object with a 'model' field")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_body(
            "The request must name its 'model' (a string: a model name, engine id, label or"
            " alias; GET /v1/models lists them)",
            param="model",
        )
    return request


def priority_of(header: bytes | None, request: dict[str, Any]) -> int:
    value: Any = request.get("priority", 0) if header is None else header
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise errors.bad_body(
            f"priority (field or X-Priority header) must be an integer, lower first; got {value!r}",
            param="priority",
        ) from None


async def read_body(receive: Any) -> bytes:
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(
                413, "request_too_large", f"The request body is over {MAX_BODY_BYTES} bytes"
            )
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)
