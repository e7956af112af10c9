"""A pooled HTTP/1.1 client for the engines, on asyncio protocols and httptools' parser.

aiohttp's client costs about 150 us of CPU per request on this kind of machine and httpx's
far more; a proxy that wants to add well under a millisecond needs less than either, and it
needs only one thing of a client: POST bytes to a known origin and hand back the answer's
status, raw headers and body chunks as they arrive.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import httptools

CONNECT_TIMEOUT_S = 3.0
# Engines (uvicorn) close idle keep-alive connections after 5 s: reuse only younger ones.
IDLE_REUSE_S = 3.0
# Stop reading from an engine whose client is this far behind; resume once it caught up.
PAUSE_AT_BYTES = 1 << 20


class UpstreamError(Exception):
    """The engine connection failed; `before_answer` tells whether any answer had begun."""

    def __init__(self, message: str, before_answer: bool, reused: bool = False) -> None:
        super().__init__(message)
        self.before_answer = before_answer
        self.reused = reused


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to one engine, carrying one request at a time."""

    def __init__(self, pool: UpstreamPool, origin: tuple[str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done: asyncio.Future[None] | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.error: UpstreamError | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._length_known = False
        self.keep_alive = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP from the engine: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.headers_done is None or self.complete:
            return
        if self.headers_done.done() and not self._length_known:
            self.on_message_complete()  # a close-delimited body ends with the connection
            return
        self._fail(f"the engine closed the connection ({exc or 'EOF'})")

    def pause_writing(self) -> None:  # the engine reads slower than we write: rare, harmless
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._length_known = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Asked now: once the message is complete the parser has forgotten it.
        self.keep_alive = self.parser.should_keep_alive()
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_AT_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- the request ------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        before = self.headers_done is not None and not self.headers_done.done()
        self.error = UpstreamError(message, before_answer=before, reused=self.reused)
        if before:
            assert self.headers_done is not None
            self.headers_done.set_exception(self.error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, head: bytes, body: bytes) -> asyncio.Future[None]:
        self._reset()
        self.headers_done = self.pool.loop.create_future()
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self.headers_done

    async def read_chunk(self) -> bytes | None:
        """All of the body that arrived since the last call (one piece or more); None at its end.

        Handing over everything buffered at once means one write to the client for it: a
        proxy that falls behind catches up in fewer, larger writes instead of falling further.
        """
        while True:
            if self.body:
                body = self.body
                chunk = body.popleft() if len(body) == 1 else b"".join(body)
                body.clear()
                self.buffered = 0
                if self._paused and self.buffered < PAUSE_AT_BYTES // 2 and not self.closed:
                    self._paused = False
                    assert self.transport is not None
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._data_waiter = self.pool.loop.create_future()
            await self._data_waiter
            self._data_waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamAnswer:
    """An engine's answer: status and raw headers at once, the body as it comes."""

    __slots__ = ("_connection", "status", "headers", "_released")

    def __init__(self, connection: UpstreamConnection) -> None:
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers
        self._released = False

    def header(self, name: bytes) -> bytes:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return b""

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self._connection.read_chunk()) is not None:
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def read_chunk(self) -> Callable[[], Awaitable[bytes | None]]:
        """The body that arrived since the last read, as one piece; None at its end."""
        return self._connection.read_chunk

    def release(self) -> None:
        """Give the connection back when the answer was read whole, else close it."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        # A connection whose reading is paused (a big body left unread) would hang its next
        # request: close it instead.
        if (
            connection.complete
            and not connection.closed
            and connection.keep_alive
            and not connection._paused
        ):
            self._connection.pool.keep(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Drop the connection: the engine sees its client go and stops generating."""
        if not self._released:
            self._released = True
            self._connection.close()


class UpstreamPool:
    """Idle keep-alive connections per engine origin, most recently used first."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._all: set[UpstreamConnection] = set()

    def keep(self, connection: UpstreamConnection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.origin, []).append(connection)

    def forget(self, connection: UpstreamConnection) -> None:
        self._all.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def _connection(self, origin: tuple[str, int]) -> UpstreamConnection:
        idle = self._idle.get(origin)
        if idle:
            now = time.monotonic()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < IDLE_REUSE_S:
                    connection.reused = True
                    return connection
                connection.close()
        try:
            _, connection = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConnection(self, origin), origin[0], origin[1]
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(
                f"cannot connect to {origin[0]}:{origin[1]}: {exc or type(exc).__name__}", True
            ) from None
        self._all.add(connection)
        return connection

    async def post(
        self, origin: tuple[str, int], target: bytes, headers: bytes, body: bytes
    ) -> UpstreamAnswer:
        """Send `POST target` with these header lines; a stale kept connection is redialled."""
        return await self.request(b"POST", origin, target, headers, body)

    async def request(
        self, method: bytes, origin: tuple[str, int], target: bytes, headers: bytes, body: bytes
    ) -> UpstreamAnswer:
        head = (
            method
            + b" "
            + target
            + b" HTTP/1.1\r\nhost: "
            + f"{origin[0]}:{origin[1]}".encode()
            + b"\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n"
            + headers
            + b"\r\n"
        )
        for _ in range(2):
            connection = await self._connection(origin)
            try:
                await connection.send(head, body)
            except UpstreamError as exc:
                if exc.reused:
                    continue  # the engine had closed the idle connection: dial a new one
                raise
            return UpstreamAnswer(connection)
        raise UpstreamError(f"cannot reach {origin[0]}:{origin[1]}", True)

    def close(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
