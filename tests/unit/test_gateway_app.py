"""Owns the tests of sagellmd/gateway/app.py: the gateway's ASGI app, driven without a server.

The app gets hand-made ASGI messages; its requests go to real tiny engines on loopback ports
through its real upstream pool. Only the daemon link is not started (no daemon here): the
tests hand the dispatcher its route table themselves.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from sagellmd.gateway.access_log import AccessLog
from sagellmd.gateway.app import GatewayApp
from sagellmd.gateway.dispatch import Ticket
from sagellmd.gateway.routes import RouteTable
from sagellmd.gateway.settings import GatewaySettings


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Engine:
    """A tiny OpenAI-ish engine: answers JSON naming what it got, or SSE when asked to."""

    status: int = 200
    cut_stream: bool = False  # die after the first event, like a crashed engine
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(target, headers, body))
                request = orjson.loads(body)
                if request.get("stream"):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                    )
                    for event in (b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"):
                        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                        if self.cut_stream:
                            await writer.drain()
                            return
                    writer.write(b"0\r\n\r\n")
                else:
                    answer = orjson.dumps({"model": request.get("model"), "port": self.port})
                    writer.write(
                        f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
                        f"x-engine: tiny\r\ncontent-length: {len(answer)}\r\n\r\n".encode()
                        + answer
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _entry(engine_id: str, port: int, **fields: Any) -> dict[str, Any]:
    entry = {
        "id": engine_id,
        "state": "ready",
        "ready": True,
        "url": f"http://127.0.0.1:{port}",
        "served_model": "Org/Chat",
        "names": ["Org/Chat", engine_id, "fast", "chat"],
        "label": "fast",
        "aliases": ["chat"],
        "endpoints": ["/v1/chat/completions", "/v1/completions"],
        "max_concurrent_requests": 4,
        "metadata": {},
    }
    entry.update(fields)
    return entry


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    pieces: list[bytes]

    def json(self) -> Any:
        return orjson.loads(self.body)


async def _exchange(
    app: GatewayApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    leave: asyncio.Event | None = None,
) -> Answer | None:
    """The answer; None when the client left (`leave` set) before the answer began."""
    delivered = False
    gone = leave or asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()  # the client stays until the answer is complete
        return {"type": "http.disconnect"}

    start: dict[str, Any] = {}
    pieces: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            pieces.append(message.get("body", b""))
            if not message.get("more_body", False):
                gone.set()

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers or [],
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    if not start:
        return None
    return Answer(start["status"], dict(start["headers"]), b"".join(pieces), pieces)


async def _call(
    app: GatewayApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Answer:
    answer = await _exchange(app, method, path, body, headers)
    assert answer is not None
    return answer


def _chat(model: Any = "Org/Chat", **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


@asynccontextmanager
async def _gateway(
    engines: int = 1, table: bool = True, **settings: Any
) -> AsyncIterator[tuple[GatewayApp, list[Engine]]]:
    started = [Engine() for _ in range(engines)]
    for engine in started:
        await engine.start()
    app = GatewayApp(GatewaySettings(**{"policy": "fifo", "queue_timeout_s": 2.0, **settings}))
    app.link.start = lambda: None  # no daemon in a unit test: the tests set the table
    app.access_log = AccessLog(io.StringIO())
    lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    said: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    running = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, said.put))
    await lifespan.put({"type": "lifespan.startup"})
    assert (await said.get())["type"] == "lifespan.startup.complete"
    if table:
        entries = [_entry(f"e{i}", engine.port) for i, engine in enumerate(started)]
        app.dispatcher.set_table(RouteTable.from_json({"version": 1, "engines": entries}))
    try:
        yield app, started
    finally:
        await lifespan.put({"type": "lifespan.shutdown"})
        assert (await said.get())["type"] == "lifespan.shutdown.complete"
        await running
        for engine in started:
            await engine.stop()


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def _logged(app: GatewayApp) -> str:
    """The access log lines written so far (the test gave the log a StringIO)."""
    app.access_log.flush()
    stream = app.access_log._stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def _error_of(answer: Answer) -> dict[str, Any]:
    document = answer.json()
    assert set(document) == {"error"}
    assert set(document["error"]) == {"message", "type", "param", "code"}
    return document["error"]


def test_health_answers_without_a_table():
    async def main() -> None:
        async with _gateway(table=False) as (app, _):
            answer = await _call(app, "GET", "/health")
            assert (answer.status, answer.json()) == (200, {"status": "ok"})

    _run(main())


def test_a_request_by_served_name_is_passed_through_byte_for_byte():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            body = b'{"model":  "Org/Chat", "messages": []}'  # odd spacing survives
            answer = await _call(
                app, "POST", "/v1/chat/completions", body, [(b"x-custom", b"kept")]
            )
            assert answer.status == 200
            assert answer.json() == {"model": "Org/Chat", "port": engine.port}
            assert answer.headers[b"x-engine"] == b"tiny"
            assert answer.headers[b"content-length"] == str(len(answer.body)).encode()
            (seen,) = engine.seen
            assert seen.path == "/v1/chat/completions"
            assert seen.body == body
            assert seen.headers["x-custom"] == "kept"

    _run(main())


@pytest.mark.parametrize("name", ["e0", "fast", "chat"])
def test_model_is_rewritten_to_the_served_name(name):
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            answer = await _call(app, "POST", "/v1/chat/completions", _chat(name))
            assert answer.status == 200
            assert orjson.loads(engine.seen[0].body)["model"] == "Org/Chat"
            assert orjson.loads(engine.seen[0].body)["messages"] == [
                {"role": "user", "content": "hi"}
            ]

    _run(main())


def test_an_unknown_model_is_404_model_not_found_listing_the_names():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            answer = await _call(app, "POST", "/v1/chat/completions", _chat("nope"))
            assert answer.status == 404
            error = _error_of(answer)
            assert error["code"] == "model_not_found"
            assert error["type"] == "invalid_request_error"
            assert error["param"] == "model"
            assert "'nope'" in error["message"]
            assert "Org/Chat, chat, e0, fast" in error["message"]
            assert engine.seen == []
            metrics = (await _call(app, "GET", "/metrics")).body.decode()
            counted = 'sagellm_gateway_rejections_total{model="(unknown)",reason="model_not_found"}'
            assert f"{counted} 1.0" in metrics
            assert app.metrics.totals["rejected"] == 1

    _run(main())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": 3}', "model"),
        (b'{"model": ""}', "model"),
        (_chat(priority="high"), "priority"),
    ],
)
def test_a_bad_body_is_400_invalid_request(body, param):
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            answer = await _call(app, "POST", "/v1/chat/completions", body)
            assert answer.status == 400
            error = _error_of(answer)
            assert error["code"] == "invalid_request"
            assert error["param"] == param
            assert engine.seen == []

    _run(main())


def test_api_keys_are_required_and_never_forwarded():
    async def main() -> None:
        async with _gateway(api_keys=("k1", "k2")) as (app, (engine,)):
            for headers in ([], [(b"authorization", b"Bearer wrong")], [(b"authorization", b"k1")]):
                answer = await _call(app, "POST", "/v1/chat/completions", _chat(), headers)
                assert answer.status == 401
                assert _error_of(answer)["code"] == "invalid_api_key"
            assert (await _call(app, "GET", "/v1/models")).status == 401
            assert (await _call(app, "GET", "/health")).status == 200  # the daemon's probe
            good = [(b"authorization", b"Bearer k2")]
            answer = await _call(app, "POST", "/v1/chat/completions", _chat(), good)
            assert answer.status == 200
            assert "authorization" not in engine.seen[0].headers
            assert (await _call(app, "GET", "/v1/models", headers=good)).status == 200
            assert len(engine.seen) == 1

    _run(main())


def test_without_keys_the_clients_authorization_reaches_the_engine():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            headers = [(b"authorization", b"Bearer engine-key")]
            assert (await _call(app, "POST", "/v1/completions", _chat(), headers)).status == 200
            assert engine.seen[0].headers["authorization"] == "Bearer engine-key"

    _run(main())


def test_x_request_id_is_forwarded_and_returned():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            given = [(b"x-request-id", b"req-42")]
            answer = await _call(app, "POST", "/v1/chat/completions", _chat(), given)
            assert answer.headers[b"x-request-id"] == b"req-42"
            assert engine.seen[0].headers["x-request-id"] == "req-42"
            made = await _call(app, "POST", "/v1/chat/completions", _chat())
            created = made.headers[b"x-request-id"]
            assert created and created != b"req-42"
            assert engine.seen[1].headers["x-request-id"] == created.decode()
            refused = await _call(app, "POST", "/v1/chat/completions", _chat("nope"), given)
            assert refused.headers[b"x-request-id"] == b"req-42"
            log = _logged(app)
            assert "request_id=req-42 model='Org/Chat' engine=e0 status=200" in log
            assert "request_id=req-42 model='(unknown)' engine=- status=404" in log

    _run(main())


def test_models_lists_every_served_name_and_alias_with_engines():
    async def main() -> None:
        async with _gateway(engines=2) as (app, _):
            answer = await _call(app, "GET", "/v1/models")
            assert answer.status == 200
            document = answer.json()
            assert document["object"] == "list"
            assert [model["id"] for model in document["data"]] == ["Org/Chat", "chat"]
            chat = document["data"][0]
            assert [engine["id"] for engine in chat["engines"]] == ["e0", "e1"]
            assert chat["ready"] is True
            for name in ("fast", "Org/Chat"):
                one = await _call(app, "GET", f"/v1/models/{name}")
                assert one.status == 200 and one.json()["id"] == "Org/Chat"
            missing = await _call(app, "GET", "/v1/models/nope")
            assert missing.status == 404
            assert _error_of(missing)["code"] == "model_not_found"

    _run(main())


def test_before_the_first_table_requests_are_refused_with_503():
    async def main() -> None:
        async with _gateway(table=False) as (app, _):
            answer = await _call(app, "POST", "/v1/chat/completions", _chat())
            assert answer.status == 503
            assert _error_of(answer)["code"] == "routes_unavailable"
            assert answer.headers[b"retry-after"] == b"1"

    _run(main())


def test_an_endpoint_the_engines_do_not_serve_is_404_naming_theirs():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            answer = await _call(app, "POST", "/v1/embeddings", b'{"model":"chat","input":"x"}')
            assert answer.status == 404
            error = _error_of(answer)
            assert error["code"] == "endpoint_not_served"
            assert "/v1/chat/completions, /v1/completions" in error["message"]
            assert engine.seen == []

    _run(main())


def test_other_methods_and_paths_are_404():
    async def main() -> None:
        async with _gateway() as (app, _):
            assert (await _call(app, "PUT", "/v1/chat/completions")).status == 404
            assert (await _call(app, "GET", "/v2/nothing")).status == 404

    _run(main())


def test_a_stream_is_relayed_event_by_event():
    async def main() -> None:
        async with _gateway() as (app, _):
            answer = await _call(app, "POST", "/v1/chat/completions", _chat(stream=True))
            assert answer.status == 200
            assert answer.headers[b"content-type"] == b"text/event-stream"
            assert b"transfer-encoding" not in answer.headers  # the server frames it anew
            assert answer.body == b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'
            assert answer.pieces[-1] == b""

    _run(main())


def test_an_engine_dying_mid_stream_ends_the_stream_with_an_error_event():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            engine.cut_stream = True
            answer = await _call(app, "POST", "/v1/chat/completions", _chat(stream=True))
            assert answer.status == 200  # the head had gone out: the stream itself says it
            first, rest = answer.body.split(b"\n\n", 1)
            assert first == b'data: {"n":1}'
            error = orjson.loads(rest.split(b"\n\n")[0].removeprefix(b"data: "))
            assert error["error"]["code"] == "engine_failed_mid_stream"
            assert rest.endswith(b"data: [DONE]\n\n")
            assert app.dispatcher.inflight == {"e0": 0}

    _run(main())


def test_a_bad_slo_header_is_400():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            headers = [(b"x-slo-ttft-ms", b"soon")]
            answer = await _call(app, "POST", "/v1/chat/completions", _chat(), headers)
            assert answer.status == 400
            assert "X-SLO-TTFT-Ms" in _error_of(answer)["message"]
            assert engine.seen == []

    _run(main())


def test_a_5xx_engine_is_retried_on_another_replica():
    async def main() -> None:
        async with _gateway(engines=2) as (app, (bad, good)):
            bad.status = 500
            app.dispatcher.rng = random.Random(3)  # ties: the same choices on every run
            for _ in range(8):
                answer = await _call(app, "POST", "/v1/chat/completions", _chat())
                assert answer.status == 200
                assert answer.json()["port"] == good.port
            assert len(bad.seen) == 1  # then suspect: skipped while the good one serves
            assert app.dispatcher.inflight == {"e0": 0, "e1": 0}

    _run(main())


def test_a_lone_engine_answering_5xx_gets_its_answer_relayed_after_the_retries():
    async def main() -> None:
        async with _gateway(retries=2, queue_timeout_s=5.0) as (app, (engine,)):
            engine.status = 503
            answer = await asyncio.wait_for(_call(app, "POST", "/v1/chat/completions", _chat()), 2)
            assert answer.status == 503  # the engine's own answer, on the last attempt
            assert len(engine.seen) == 3
            assert app.dispatcher.inflight == {"e0": 0}

    _run(main())


def test_a_lone_engine_that_is_down_is_502_engine_unavailable():
    async def main() -> None:
        async with _gateway(retries=1, queue_timeout_s=5.0) as (app, (engine,)):
            await engine.stop()
            assert engine.server is not None
            await engine.server.wait_closed()
            answer = await asyncio.wait_for(_call(app, "POST", "/v1/chat/completions", _chat()), 2)
            assert answer.status == 502
            error = _error_of(answer)
            assert error["code"] == "engine_unavailable"
            assert "e0: cannot connect" in error["message"]
            assert app.dispatcher.inflight == {"e0": 0}

    _run(main())


def test_a_client_that_leaves_while_queued_frees_its_place():
    async def main() -> None:
        async with _gateway() as (app, (engine,)):
            table = app.dispatcher.table
            group = table.resolve("Org/Chat")
            assert group is not None
            held = []
            for _ in range(table.engines["e0"].cap):  # every slot busy
                held.append(await app.dispatcher.acquire(group, "Org/Chat", Ticket(0.0)))
            leave = asyncio.Event()
            request = asyncio.create_task(
                _exchange(app, "POST", "/v1/chat/completions", _chat(), leave=leave)
            )
            while app.dispatcher.queued_for("e0") == 0:
                await asyncio.sleep(0.001)
            leave.set()
            assert await asyncio.wait_for(request, 2) is None  # nothing sent to a gone client
            assert app.dispatcher.queued_for("e0") == 0
            for route in held:
                app.dispatcher.release(route.id)
            assert app.dispatcher.inflight == {"e0": 0}
            assert engine.seen == []
            assert "engine=- status=499" in _logged(app)

    _run(main())


def test_x_priority_orders_the_waiting_requests():
    async def main() -> None:
        async with _gateway(policy="priority") as (app, (engine,)):
            table = app.dispatcher.table
            group = table.resolve("Org/Chat")
            assert group is not None
            held = [
                await app.dispatcher.acquire(group, "Org/Chat", Ticket(0.0))
                for _ in range(table.engines["e0"].cap)
            ]
            normal = asyncio.create_task(
                _call(app, "POST", "/v1/chat/completions", _chat(), [(b"x-request-id", b"n")])
            )
            while app.dispatcher.queued_for("e0") < 1:
                await asyncio.sleep(0.001)
            urgent = asyncio.create_task(
                _call(
                    app,
                    "POST",
                    "/v1/chat/completions",
                    _chat(),
                    [(b"x-request-id", b"u"), (b"x-priority", b"-10")],
                )
            )
            while app.dispatcher.queued_for("e0") < 2:
                await asyncio.sleep(0.001)
            app.dispatcher.release(held[0].id)  # one slot: the urgent request takes it
            assert (await asyncio.wait_for(urgent, 2)).status == 200
            for route in held[1:]:
                app.dispatcher.release(route.id)
            assert (await asyncio.wait_for(normal, 2)).status == 200
            assert [seen.headers["x-request-id"] for seen in engine.seen] == ["u", "n"]

    _run(main())
