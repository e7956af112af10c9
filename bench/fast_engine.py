"""A fast stand-in OpenAI engine for bench/gateway.py: a raw ASGI app (no framework) on uvicorn.

Run: python bench/fast_engine.py --port 20001 [--latency-ms 20] [--stream-tokens 64]
         [--token-interval-ms 20] [--host 127.0.0.1] [--model NAME ...]

uvicorn with uvloop and httptools, one worker, access log off: about the fastest Python
HTTP server there is, so a proxy in front of it is what a benchmark measures. It serves
`GET /health`, `GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions`,
non-streaming (one precomputed JSON answer with Content-Length) and `"stream": true`
(server-sent events, chunked: `--stream-tokens` token chunks `--token-interval-ms` apart,
then `data: [DONE]`). `--latency-ms` is waited before the first byte of every answer.
The answer's `model` echoes the request's, so any routable name works.

It runs as a daemon runtime too (the daemon appends nothing to a custom runtime's argv
but the spec's `extra_args`, and probes `GET /health`):
`runtimes: {fast: {command: [python, /abs/bench/fast_engine.py, --port, "{port}"]}}`,
engine spec `{runtime: fast, extra_args: [--latency-ms, "20", ...]}`. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
DEFAULT_MODEL = "fake/bench"
MAX_CACHED_MODELS = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fast_engine", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--stream-tokens", type=int, default=16)
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    parser.add_argument(
        "--model", nargs="+", default=[DEFAULT_MODEL], help="names /v1/models lists"
    )
    return parser


class FastEngine:
    """The ASGI app; every answer body that does not depend on the request is prebuilt."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.stream_tokens < 1:
            raise SystemExit("fast_engine: --stream-tokens must be at least 1")
        if args.latency_ms < 0 or args.token_interval_ms < 0:
            raise SystemExit("fast_engine: --latency-ms and --token-interval-ms must be >= 0")
        self.latency_s = args.latency_ms / 1000
        self.interval_s = args.token_interval_ms / 1000
        self.tokens = args.stream_tokens
        # Answers by (chat?, model): JSON encoding is most of a request's cost here.
        self.answers: dict[tuple[bool, str], bytes] = {}
        self.streams: dict[tuple[bool, str], list[bytes]] = {}
        created = int(time.time())
        self.models = json.dumps(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "bench"}
                    for name in args.model
                ],
            }
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/health":
            await answer(send, 200, b"")
        elif method == "GET" and path == "/v1/models":
            await answer(send, 200, self.models)
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            await self.complete(path == "/v1/chat/completions", receive, send)
        else:
            await answer(send, 404, b'{"detail":"Not Found"}')

    async def complete(self, chat: bool, receive: Receive, send: Send) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = json.loads(raw)
            model = str(body.get("model") or DEFAULT_MODEL)
        except (ValueError, AttributeError):
            await answer(send, 400, b'{"error":{"message":"body must be a JSON object"}}')
            return
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if len(self.answers) > MAX_CACHED_MODELS:
            self.answers.clear()
            self.streams.clear()
        key = (chat, model)
        if body.get("stream") is True:
            events = self.streams.get(key)
            if events is None:
                events = self.streams[key] = [
                    b"data: " + chunk(chat, model, i, i == self.tokens - 1) + b"\n\n"
                    for i in range(self.tokens)
                ]
            await self.stream(events, send)
        else:
            document = self.answers.get(key)
            if document is None:
                document = self.answers[key] = completion(chat, model)
            await answer(send, 200, document)

    async def stream(self, events: list[bytes], send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for index, event in enumerate(events):
            if index and self.interval_s:
                await asyncio.sleep(self.interval_s)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def answer(send: Send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def completion(chat: bool, model: str) -> bytes:
    usage = {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}
    if chat:
        message = {"role": "assistant", "content": "fast bench answer"}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
        kind, prefix = "chat.completion", "chatcmpl-bench"
    else:
        choice = {"index": 0, "text": "fast bench answer", "finish_reason": "stop"}
        kind, prefix = "text_completion", "cmpl-bench"
    document = {"id": prefix, "object": kind, "created": 0, "model": model, "choices": [choice]}
    return json.dumps({**document, "usage": usage}).encode()


def chunk(chat: bool, model: str, index: int, last: bool) -> bytes:
    finish = "stop" if last else None
    if chat:
        delta = {"content": f" t{index}"} if index else {"role": "assistant", "content": "t0"}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": f" t{index}", "finish_reason": finish}
        kind = "text_completion"
    return json.dumps(
        {"id": "bench", "object": kind, "created": 0, "model": model, "choices": [choice]}
    ).encode()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    uvicorn.run(
        FastEngine(args),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="on",
        # Long enough for a pooled proxy to keep its connections between bench points.
        timeout_keep_alive=60,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
