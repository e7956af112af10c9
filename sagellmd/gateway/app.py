"""The gateway's ASGI app: its own endpoints, and every other `POST /v1/*` proxied by model."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import orjson

from sagellmd.gateway import errors
from sagellmd.gateway.access_log import AccessLog
from sagellmd.gateway.api_keys import authorized
from sagellmd.gateway.balance import prefix_key
from sagellmd.gateway.client_request import (
    ClientGone,
    ClientWatch,
    parse_request,
    priority_of,
    read_body,
)
from sagellmd.gateway.daemon_link import DaemonLink
from sagellmd.gateway.dispatch import Dispatcher, Ticket
from sagellmd.gateway.errors import GatewayError
from sagellmd.gateway.metrics import GatewayMetrics
from sagellmd.gateway.own_answers import (
    SSE_HEADERS,
    answer,
    end_stream_with_error,
    error_answer,
    not_here,
)
from sagellmd.gateway.pd_dispatch import PdServer
from sagellmd.gateway.proxy import DROPPED_REQUEST_HEADERS, forward
from sagellmd.gateway.settings import GatewaySettings
from sagellmd.gateway.upstream import UpstreamPool

LOADING_COMMENT_EVERY_S = 3.0
# The endpoints the runtime kinds list; other `POST /v1/*` paths pass through unchecked.
CHECKED_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
UNKNOWN_MODEL = "(unknown)"  # the metrics label of names nobody declared: no label explosion


class GatewayApp:
    """A raw ASGI app: no framework between the socket and the proxy (speed)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.dispatcher = Dispatcher(
            settings.policy,
            settings.balance,
            settings.max_waiting,
            settings.queue_timeout_s,
            settings.suspect_s,
            settings.priority_aging_s,
        )
        self.metrics = GatewayMetrics(
            self.dispatcher.queue_lengths, lambda: dict(self.dispatcher.inflight)
        )
        self.access_log = AccessLog()
        self.link = DaemonLink(
            settings, self.dispatcher, lambda: dict(self.metrics.totals), self.access_log.flush
        )
        self.upstream: UpstreamPool | None = None
        self.pd = PdServer(
            settings,
            self.dispatcher,
            self.metrics,
            self.access_log,
            lambda: self.upstream,
            self._acquire_loading,
        )
        self._keys = tuple(key.encode() for key in settings.api_keys)
        self._ids = itertools.count(1)
        # Made-up request ids are UUID-shaped: some engines (llama-cpp-python's server)
        # answer 400 to an X-Request-Id that is not a UUID.
        prefix = os.urandom(10).hex()
        self._id_prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        self._scraper: Any = None
        self._scraper_session: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            method = scope["method"]
            if method == "POST" and path.startswith("/v1/"):
                await self._proxy(scope, receive, send)
            elif method == "GET":
                await self._get(scope, path, send)
            else:
                await error_answer(send, not_here(method, path))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # -- the gateway's own answers ---------------------------------------------------------

    async def _get(self, scope: dict[str, Any], path: str, send: Any) -> None:
        if path == "/health":
            await answer(send, 200, b'{"status":"ok"}')
            return
        if self._keys and not authorized(self._keys, scope["headers"]):
            await error_answer(send, errors.unauthorized())
            return
        if path == "/metrics":
            headers = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
            await answer(send, 200, self.metrics.exposition(), headers)
        elif path == "/v1/models":
            data = self.dispatcher.table.model_list()
            await answer(send, 200, orjson.dumps({"object": "list", "data": data}))
        elif path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            for entry in self.dispatcher.table.model_list():
                if entry["id"] == name or name in entry["names"]:
                    await answer(send, 200, orjson.dumps(entry))
                    return
            await error_answer(
                send, errors.model_not_found(name, self.dispatcher.table.routable_names())
            )
        else:
            await error_answer(send, not_here("GET", path))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.upstream = UpstreamPool()
                self.link.start()
                if self.settings.balance == "kv-aware":
                    self._start_scraper()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._scraper is not None:
                    await self._scraper.stop()
                    await self._scraper_session.close()
                await self.link.stop()
                if self.upstream is not None:
                    self.upstream.close()
                self.access_log.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start_scraper(self) -> None:
        from sagellmd.gateway.engine_metrics import KvScraper

        assert self.upstream is not None

        def origins() -> dict[str, str]:
            return {
                engine_id: route.origin
                for engine_id, route in self.dispatcher.table.engines.items()
                if route.ready and route.runtime_reports_kv
            }

        import aiohttp

        self._scraper_session = aiohttp.ClientSession()
        self._scraper = KvScraper(origins, self._scraper_session)
        self.dispatcher.kv_loads = self._scraper.loads
        self._scraper.start()

    # -- the proxy ---------------------------------------------------------------------------

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        arrived = time.monotonic()
        request_id = b""
        priority_header = slo_header = None
        authorization = b""
        lines = []
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"authorization":
                authorization = value
                if not self._keys:
                    lines.append(b"authorization: " + value + b"\r\n")
            elif name == b"x-priority":
                priority_header = value
            elif name == b"x-slo-ttft-ms":
                slo_header = value
            elif name not in DROPPED_REQUEST_HEADERS:
                lines.append(name + b": " + value + b"\r\n")
        if not request_id:
            request_id = f"{self._id_prefix}{next(self._ids):012x}".encode()
        forwarded = b"".join(lines)
        model_label = UNKNOWN_MODEL
        try:
            if self._keys and not authorized(
                self._keys, [(b"authorization", authorization)] if authorization else []
            ):
                raise errors.unauthorized()
            body = await read_body(receive)
            request = parse_request(body)
            name = request["model"]
            table = self.dispatcher.table
            if not table.loaded:
                raise GatewayError(
                    503,
                    "routes_unavailable",
                    "The gateway has not received its route table from the daemon yet",
                    type="server_error",
                    retry_after_s=1.0,
                )
            group = table.resolve(name)
            if group is None:
                raise errors.model_not_found(name, table.routable_names())
            model_label = name
            path = scope["path"]
            if path in CHECKED_ENDPOINTS:
                served = group.endpoints(table)
                if served and path not in served:
                    raise errors.endpoint_not_served(name, path, sorted(served))
            ticket = Ticket(
                arrived,
                priority_of(priority_header, request),
                self._deadline(slo_header, arrived, group),
                authorization.decode("latin-1"),
            )
            if group.pd is not None:
                await self.pd.serve(
                    scope, receive, send, request, name, group.pd, ticket, forwarded, request_id
                )
                return
            await self._serve(
                scope, receive, send, request, body, name, group, ticket, forwarded, request_id
            )
        except GatewayError as error:
            self.metrics.rejected(model_label, error.code)
            await error_answer(send, error, request_id)
            self.access_log.write(request_id, model_label, "-", error.status, arrived)
        except ClientGone:
            self.access_log.write(request_id, model_label, "-", 499, arrived)

    def _deadline(self, header: bytes | None, arrived: float, group: Any) -> float | None:
        milliseconds: float | None = None
        if header is not None:
            try:
                milliseconds = float(header)
            except ValueError:
                raise errors.bad_body(
                    f"X-SLO-TTFT-Ms must be a number of milliseconds, got {header!r}"
                ) from None
        else:
            milliseconds = self.dispatcher.slo_default_ms(group) or self.settings.slo_ttft_ms
        return None if milliseconds is None else arrived + milliseconds / 1000

    async def _serve(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        request: dict[str, Any],
        body: bytes,
        name: str,
        group: Any,
        ticket: Ticket,
        headers: bytes,
        request_id: bytes,
    ) -> None:
        assert self.upstream is not None
        stream = request.get("stream") is True
        key = prefix_key(request) if self.settings.balance == "prefix" else None
        query = scope.get("query_string") or b""
        target = scope["raw_path"] or scope["path"].encode()
        if query:
            target += b"?" + query
        failures: list[str] = []
        # A stream for a model that is still loading starts at once and gets a comment line
        # every few seconds, so neither the client nor a proxy in between gives up on it.
        loading = stream and self.dispatcher.coming_up(group) is not None
        async with ClientWatch(receive) as client:
            try:
                if loading:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [*SSE_HEADERS, (b"x-request-id", request_id)],
                        }
                    )
                for attempt_number in range(self.settings.retries + 1):
                    if loading:
                        route = await self._acquire_loading(group, name, ticket, key, send)
                    else:
                        route = await self.dispatcher.acquire(group, name, ticket, key)
                    payload = body
                    sent_headers = headers
                    if route.takes_request_id(request_id):
                        sent_headers += b"x-request-id: " + request_id + b"\r\n"
                    if route.served_model != name:
                        request["model"] = route.served_model
                        payload = orjson.dumps(request)
                    try:
                        attempt = await forward(
                            self.upstream,
                            route.address,
                            target,
                            sent_headers,
                            payload,
                            stream,
                            request_id,
                            send,
                            attempt_number == self.settings.retries,
                            started=loading,
                        )
                    finally:
                        self.dispatcher.release(route.id)
                    if attempt.sent:
                        client.done()
                        done = time.monotonic()
                        self.dispatcher.observe_first_byte(
                            group, attempt.first_byte_at - ticket.arrived - ticket.queued_s
                        )
                        self.metrics.answered(
                            name,
                            route.id,
                            attempt.status,
                            ticket.queued_s,
                            attempt.first_byte_at - ticket.arrived,
                            done - ticket.arrived,
                        )
                        self.access_log.write(
                            request_id,
                            name,
                            route.id,
                            attempt.status,
                            ticket.arrived,
                            ticket.queued_s,
                            attempt.first_byte_at,
                        )
                        return
                    self.dispatcher.mark_suspect(route.id)
                    failures.append(f"{route.id}: {attempt.retryable_detail}")
                    if attempt_number < self.settings.retries:
                        self.metrics.retried(name, route.id)
                client.done()
                raise errors.engine_unavailable(name, "; ".join(failures))
            except GatewayError as error:
                if not loading:
                    raise
                client.done()
                self.metrics.rejected(name, error.code)
                await end_stream_with_error(send, error)
                self.access_log.write(request_id, name, "-", error.status, ticket.arrived)

    async def _acquire_loading(
        self, group: Any, name: str, ticket: Ticket, key: bytes | None, send: Any
    ) -> Any:
        """Wait for a slot as `acquire` does, sending `: loading ENGINE N s` meanwhile."""
        acquiring = asyncio.ensure_future(self.dispatcher.acquire(group, name, ticket, key))
        started = time.monotonic()
        taken = False
        try:
            while True:
                done, _ = await asyncio.wait({acquiring}, timeout=LOADING_COMMENT_EVERY_S)
                if done:
                    taken = True
                    return acquiring.result()
                engine = self.dispatcher.coming_up(group) or group.engine_ids[0]
                waited = int(time.monotonic() - started)
                line = f": loading {engine} {waited} s\n\n".encode()
                await send({"type": "http.response.body", "body": line, "more_body": True})
        finally:
            if not acquiring.done():
                acquiring.cancel()
            elif not taken and not acquiring.cancelled() and acquiring.exception() is None:
                self.dispatcher.release(acquiring.result().id)  # got one as the client left
