"""Owns the tests of sagellmd/gateway/upstream.py: the pooled HTTP/1.1 client of the engines.

Against a real HTTP server on a free loopback port, written here on asyncio streams so each
test decides byte by byte what the "engine" sends, when it closes, and counts its connections.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from sagellmd.gateway.upstream import PAUSE_AT_BYTES, UpstreamAnswer, UpstreamError, UpstreamPool


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    nth: int  # 1 for the first request on its connection


Respond = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class TinyEngine:
    """An HTTP/1.1 server whose answers are `respond(...)`; it returns False to close."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.accepted = 0
        self.requests: list[Request] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.client_left = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> TinyEngine:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()
        # A connection the client aborted may never count as detached: do not wait forever.
        await asyncio.wait([asyncio.ensure_future(self._server.wait_closed())], timeout=1)

    @property
    def origin(self) -> tuple[str, int]:
        assert self._server is not None
        return ("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        nth = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.client_left.set()
                    return
                nth += 1
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, target, headers, body, nth)
                self.requests.append(request)
                try:
                    if not await self.respond(request, reader, writer):
                        return
                except ConnectionError:  # the client reset the connection mid-answer
                    self.client_left.set()
                    return
        finally:
            writer.close()


def _answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


async def _echo(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
    writer.write(_answer(b'{"echo":' + request.body + b"}", b"x-engine: tiny\r\n"))
    await writer.drain()
    return True


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


async def _post(pool: UpstreamPool, origin: tuple[str, int], body: bytes = b"1") -> UpstreamAnswer:
    return await pool.post(origin, b"/v1/test", b"x-test: yes\r\n", body)


def test_the_request_arrives_as_sent_and_the_answer_is_read_whole():
    async def main() -> None:
        async with TinyEngine(_echo) as engine:
            pool = UpstreamPool()
            answer = await pool.post(
                engine.origin, b"/v1/chat/completions?x=1", b"x-request-id: r1\r\n", b"[2]"
            )
            assert answer.status == 200
            assert answer.header(b"x-engine") == b"tiny"
            assert answer.header(b"content-type") == b"application/json"
            assert answer.header(b"absent") == b""
            assert await answer.read() == b'{"echo":[2]}'
            answer.release()
            (request,) = engine.requests
            assert (request.method, request.target) == ("POST", "/v1/chat/completions?x=1")
            assert request.headers["host"] == f"127.0.0.1:{engine.origin[1]}"
            assert request.headers["content-length"] == "3"
            assert request.headers["x-request-id"] == "r1"
            assert request.body == b"[2]"
            pool.close()

    _run(main())


def test_a_large_body_is_sent_whole():
    async def main() -> None:
        async with TinyEngine(_echo) as engine:
            pool = UpstreamPool()
            body = b"7" * 200_000  # above the size that is written in one piece with the head
            answer = await _post(pool, engine.origin, body)
            assert await answer.read() == b'{"echo":' + body + b"}"
            answer.release()
            assert engine.requests[0].body == body
            pool.close()

    _run(main())


def test_keep_alive_reuses_one_connection_for_sequential_requests():
    async def main() -> None:
        async with TinyEngine(_echo) as engine:
            pool = UpstreamPool()
            for number in range(5):
                answer = await _post(pool, engine.origin, str(number).encode())
                assert await answer.read() == b'{"echo":' + str(number).encode() + b"}"
                answer.release()
            assert engine.accepted == 1
            assert [request.nth for request in engine.requests] == [1, 2, 3, 4, 5]
            pool.close()

    _run(main())


def test_an_answer_released_before_its_end_is_not_reused():
    hung_up = asyncio.Event()

    async def half(request: Request, reader: asyncio.StreamReader, writer: Any) -> bool:
        if hung_up.is_set():
            return await _echo(request, reader, writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
        await writer.drain()
        try:
            await reader.read(1)  # the rest never comes: the client must hang up
        finally:
            hung_up.set()
        return False

    async def main() -> None:
        async with TinyEngine(half) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin)
            answer.release()  # half a body on the wire: the connection cannot carry another
            await asyncio.wait_for(hung_up.wait(), 2)
            answer = await _post(pool, engine.origin)
            assert await answer.read() == b'{"echo":1}'
            answer.release()
            assert engine.accepted == 2
            pool.close()

    _run(main())


def test_a_chunked_body_is_read_chunk_by_chunk_as_it_arrives():
    gate: asyncio.Queue[bytes] = asyncio.Queue()

    async def chunked(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        while piece := await gate.get():
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def main() -> None:
        async with TinyEngine(chunked) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin)
            assert answer.header(b"transfer-encoding") == b"chunked"
            for piece in (b"data: one\n\n", b"data: two\n\n"):
                # The engine sends the next piece only now: the first must not wait for it.
                await gate.put(piece)
                assert await asyncio.wait_for(answer.read_chunk(), 2) == piece
            await gate.put(b"")
            assert await asyncio.wait_for(answer.read_chunk(), 2) is None  # the body's end
            answer.release()
            # Read to its end, the chunked answer leaves the connection reusable.
            for piece in (b"again", b""):
                await gate.put(piece)
            answer = await _post(pool, engine.origin)
            assert await answer.read() == b"again"
            answer.release()
            assert engine.accepted == 1
            pool.close()

    _run(main())


def test_an_idle_connection_the_engine_closed_is_redialled():
    async def answer_then_close(request: Request, reader: Any, writer: Any) -> bool:
        await _echo(request, reader, writer)
        return False  # like uvicorn closing an idle keep-alive connection

    async def main() -> None:
        async with TinyEngine(answer_then_close) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin, b"1")
            assert await answer.read() == b'{"echo":1}'
            answer.release()
            await asyncio.wait_for(_closed(engine), 2)
            answer = await _post(pool, engine.origin, b"2")
            assert await answer.read() == b'{"echo":2}'
            answer.release()
            assert engine.accepted == 2
            pool.close()

    _run(main())


async def _closed(engine: TinyEngine) -> None:
    """Until the engine has closed its first connection and the pool has heard of it."""
    while not engine.writers or not engine.writers[0].is_closing():
        await asyncio.sleep(0.001)
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_kept_connection_closed_as_the_request_arrives_is_redialled():
    # The race a pool must survive: the engine closes a kept connection just as the next
    # request goes out on it, so nothing was answered; the request is sent again on a new one.
    async def close_second(request: Request, reader: Any, writer: Any) -> bool:
        if request.nth >= 2:
            return False
        return await _echo(request, reader, writer)

    async def main() -> None:
        async with TinyEngine(close_second) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin, b"1")
            await answer.read()
            answer.release()
            answer = await _post(pool, engine.origin, b"2")
            assert await answer.read() == b'{"echo":2}'
            answer.release()
            assert engine.accepted == 2
            assert [(r.body, r.nth) for r in engine.requests] == [(b"1", 1), (b"2", 2), (b"2", 1)]
            pool.close()

    _run(main())


def test_an_engine_that_closes_a_new_connection_without_answering_fails_before_answer():
    async def hang_up(request: Request, reader: Any, writer: Any) -> bool:
        return False

    async def main() -> None:
        async with TinyEngine(hang_up) as engine:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as failed:
                await _post(pool, engine.origin)
            assert failed.value.before_answer is True
            assert engine.accepted == 1  # a fresh connection is not redialled: it is an answer
            pool.close()

    _run(main())


def test_connection_refused_fails_before_answer():
    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        pool = UpstreamPool()
        with pytest.raises(UpstreamError, match=f"cannot connect to 127.0.0.1:{port}") as failed:
            await _post(pool, ("127.0.0.1", port))
        assert failed.value.before_answer is True
        pool.close()

    _run(main())


def test_an_engine_dying_mid_body_fails_the_read_after_the_answer_began():
    async def die(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await writer.drain()
        return False

    async def main() -> None:
        async with TinyEngine(die) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin)
            assert answer.status == 200
            received = b""
            with pytest.raises(UpstreamError) as failed:
                while (chunk := await answer.read_chunk()) is not None:
                    received += chunk
            assert received == b"0123456789"
            assert failed.value.before_answer is False
            answer.close()
            pool.close()

    _run(main())


def test_an_engine_dying_mid_chunked_stream_fails_the_read():
    async def die(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        return False

    async def main() -> None:
        async with TinyEngine(die) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin)
            with pytest.raises(UpstreamError) as failed:
                await answer.read()
            assert failed.value.before_answer is False
            pool.close()

    _run(main())


def test_a_close_delimited_body_is_read_to_its_end():
    async def close_delimited(request: Request, reader: Any, writer: Any) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\n")
        for piece in (b"no ", b"length ", b"given"):
            writer.write(piece)
            await writer.drain()
        return False

    async def main() -> None:
        async with TinyEngine(close_delimited) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin)
            assert await answer.read() == b"no length given"
            answer.release()
            # Not kept: the next request dials again.
            answer = await _post(pool, engine.origin)
            assert await answer.read() == b"no length given"
            answer.release()
            assert engine.accepted == 2
            pool.close()

    _run(main())


def _stream_until_closed(engine_box: list[TinyEngine]) -> Respond:
    async def stream(request: Request, reader: asyncio.StreamReader, writer: Any) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        # Like vLLM: it generates until its client goes; then it frees the sequence.
        try:
            await reader.read(1)
        finally:
            engine_box[0].client_left.set()
        return False

    return stream


@pytest.mark.parametrize("closer", ["pool", "answer"])
def test_close_aborts_the_connection_and_the_engine_sees_its_client_go(closer):
    async def main() -> None:
        box: list[TinyEngine] = []
        async with TinyEngine(_stream_until_closed(box)) as engine:
            box.append(engine)
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin)
            assert await asyncio.wait_for(answer.read_chunk(), 2) == b"one"
            if closer == "pool":
                pool.close()
            else:
                answer.close()
            await asyncio.wait_for(engine.client_left.wait(), 2)
            if closer == "pool":
                with pytest.raises(UpstreamError):
                    await asyncio.wait_for(answer.read_chunk(), 2)
            pool.close()

    _run(main())


def test_an_answer_released_unread_while_reading_was_paused_leaves_no_stuck_connection():
    # A body over PAUSE_AT_BYTES stops the reading until the client catches up; released
    # unread, the connection must not go back to the pool with its reading still stopped.
    big = b"x" * (PAUSE_AT_BYTES + 10)

    async def answer_big(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(_answer(big if request.body == b"big" else b"small"))
        await writer.drain()
        return True

    async def main() -> None:
        async with TinyEngine(answer_big) as engine:
            pool = UpstreamPool()
            answer = await _post(pool, engine.origin, b"big")
            connection = answer._connection
            for _ in range(500):  # until the whole answer is in (it may stay partial: fine)
                if connection.complete:
                    break
                await asyncio.sleep(0.001)
            answer.release()
            answer = await asyncio.wait_for(_post(pool, engine.origin, b"small"), 2)
            assert await asyncio.wait_for(answer.read(), 2) == b"small"
            answer.release()
            pool.close()

    _run(main())
