"""Requests for a prefill/decode model: a decode slot, P's step, then D's answer relayed.

The order of vLLM's toy_proxy_server.py (P then D with P's kv_transfer_params, the same
X-Request-Id to both), with the gateway's queueing in front: the request first takes a
decode slot (least-outstanding over the model's decode instances), then a prefill slot of
that decode instance's group, so it never holds P's KV blocks while it waits for a D, and
it waits (or wakes the model) like any request while a pool has no ready instance. P's
answer is a small JSON read whole; D's is relayed as proxy.forward relays any engine's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from sagellmd.gateway import errors
from sagellmd.gateway.access_log import AccessLog
from sagellmd.gateway.balance import prefix_key
from sagellmd.gateway.client_request import ClientWatch
from sagellmd.gateway.dispatch import COMING_UP, Dispatcher
from sagellmd.gateway.errors import GatewayError
from sagellmd.gateway.metrics import GatewayMetrics
from sagellmd.gateway.own_answers import SSE_HEADERS, end_stream_with_error
from sagellmd.gateway.pd_protocol import (
    PrefillVerdict,
    decode_body,
    judge_prefill,
    prefill_body,
    prefill_step_failed,
    wants_prefill,
    without_accept_encoding,
)
from sagellmd.gateway.proxy import fetch_whole, forward
from sagellmd.gateway.routes import ModelGroup, PdGroup, PdRouting, Route
from sagellmd.gateway.settings import GatewaySettings
from sagellmd.gateway.upstream import UpstreamError, UpstreamPool
from sagellmd.gateway.waiting import Ticket

# The endpoints vLLM's kv connectors hand a prefill over for; others go to D alone.
PD_PATHS = frozenset({b"/v1/chat/completions", b"/v1/completions"})
# P answers one token: anything near this is not the answer of a prefill.
PREFILL_ANSWER_LIMIT = 1 << 20
AcquireLoading = Callable[[ModelGroup, str, Ticket, "bytes | None", Any], Awaitable[Route]]


@dataclass(slots=True)
class PdRequest:
    """One client request on its way through P and D."""

    send: Any
    request: dict[str, Any]
    name: str
    routing: PdRouting
    ticket: Ticket
    headers: bytes
    request_id: bytes
    path: bytes
    target: bytes
    loading: bool  # the gateway began the stream itself: errors become its last event
    upstream: UpstreamPool
    queued_s: float = 0.0

    def body_for(self, route: Route) -> dict[str, Any]:
        return {**self.request, "model": route.served_model}

    def headers_for(self, route: Route, headers: bytes) -> bytes:
        if route.takes_request_id(self.request_id):
            return headers + b"x-request-id: " + self.request_id + b"\r\n"
        return headers

    def fresh_ticket(self) -> Ticket:
        """A ticket of the same arrival, priority and deadline, with no engine tried yet."""
        ticket = self.ticket
        return Ticket(ticket.arrived, ticket.priority, ticket.deadline, ticket.client)


class PdServer:
    """Serves the requests whose name routes to prefill and decode instances."""

    def __init__(
        self,
        settings: GatewaySettings,
        dispatcher: Dispatcher,
        metrics: GatewayMetrics,
        access_log: AccessLog,
        upstream: Callable[[], UpstreamPool | None],
        acquire_loading: AcquireLoading,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.access_log = access_log
        self._upstream = upstream
        self._acquire_loading = acquire_loading

    def _coming_up(self, routing: PdRouting) -> bool:
        """No group can serve yet but one of its instances starts (or can start)."""
        table = self.dispatcher.table
        if table.pd_routable(routing):
            return False
        return any(
            table.engines[engine_id].state in COMING_UP
            for group in routing.groups
            for engine_id in (*group.prefill.engine_ids, *group.decode.engine_ids)
        )

    async def serve(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        request: dict[str, Any],
        name: str,
        routing: PdRouting,
        ticket: Ticket,
        headers: bytes,
        request_id: bytes,
    ) -> None:
        """As GatewayApp._serve: the client leaving cancels the request (ClientGone)."""
        upstream = self._upstream()
        assert upstream is not None
        path = scope["raw_path"] or scope["path"].encode()
        query = scope.get("query_string") or b""
        loading = request.get("stream") is True and self._coming_up(routing)
        pd = PdRequest(
            send,
            request,
            name,
            routing,
            ticket,
            headers,
            request_id,
            path,
            path + b"?" + query if query else path,
            loading,
            upstream,
        )
        async with ClientWatch(receive):
            if loading:
                sse = [*SSE_HEADERS, (b"x-request-id", request_id)]
                await send({"type": "http.response.start", "status": 200, "headers": sse})
            try:
                await self._serve(pd)
            except GatewayError as error:
                if not loading:
                    raise
                self.metrics.rejected(name, error.code)
                await end_stream_with_error(send, error)
                self.access_log.write(request_id, name, "-", error.status, ticket.arrived)

    async def _acquire(
        self, pd: PdRequest, pool: ModelGroup, pool_name: str, ticket: Ticket, key: bytes | None
    ) -> Route:
        if pd.loading:
            route = await self._acquire_loading(pool, pool_name, ticket, key, pd.send)
        else:
            route = await self.dispatcher.acquire(pool, pool_name, ticket, key)
        pd.queued_s += ticket.queued_s
        return route

    async def _await_news(self, pool: ModelGroup, failed: Route, ticket: Ticket) -> None:
        """After `failed` could not be reached: wait for the daemon's next table (at most
        gateway.suspect_s) when the next try would be an instance this request tried.

        A group's only P (or D) that died is still `ready` until the daemon's table says it
        exited; trying it again at once would spend the retries in a millisecond. Once the
        table says so, the next try waits in the queue for the restarted instance.
        """
        engines = self.dispatcher.table.engines
        untried = [
            engine_id
            for engine_id in pool.engine_ids
            if engine_id not in ticket.tried and engine_id in engines and engines[engine_id].ready
        ]
        if untried or failed.id not in engines:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dispatcher.table_waiters.append(future)
        try:
            await asyncio.wait_for(future, self.settings.suspect_s)
        except TimeoutError:
            pass

    async def _serve(self, pd: PdRequest) -> None:
        routing = pd.routing
        decode = await self._acquire(pd, routing.decode, routing.decode_name, pd.ticket, None)
        group = routing.group_of(decode)
        try:
            if pd.path in PD_PATHS and wants_prefill(pd.request, group.threshold_input_tokens):
                self.metrics.pd_routed(pd.name, "prefill_decode")
                verdict = await self._prefill(pd, group)
            else:
                self.metrics.pd_routed(pd.name, "decode_only")
                verdict = PrefillVerdict()
        except BaseException:
            self.dispatcher.release(decode.id)
            raise
        if isinstance(verdict, tuple):  # P's 4xx: the client's request is at fault
            self.dispatcher.release(decode.id)
            await self._relay_error(pd, *verdict)
            return
        await self._decode(pd, group, decode, verdict.params)

    async def _decode(
        self, pd: PdRequest, group: PdGroup, decode: Route, params: dict[str, Any] | None
    ) -> None:
        """D's answer relayed; before its first byte a failed D hands over to another D."""
        # P's blocks are fetched by a D of P's group; without them any D of the name serves.
        if params is not None:
            pool, pool_name = group.decode, group.decode_name
        else:
            pool, pool_name = pd.routing.decode, pd.routing.decode_name
        ticket = pd.fresh_ticket()
        ticket.tried.add(decode.id)
        failures: list[str] = []
        route: Route | None = decode
        retries = self.settings.retries
        for attempt_number in range(retries + 1):
            if route is None:
                route = await self._acquire(pd, pool, pool_name, ticket, None)
            payload = orjson.dumps(decode_body(pd.body_for(route), params))
            sent_at = time.monotonic()
            try:
                attempt = await forward(
                    pd.upstream,
                    route.address,
                    pd.target,
                    pd.headers_for(route, pd.headers),
                    payload,
                    pd.request.get("stream") is True,
                    pd.request_id,
                    pd.send,
                    attempt_number == retries,
                    started=pd.loading,
                )
            finally:
                self.dispatcher.release(route.id)
            if attempt.sent:
                arrived, first_byte_at = pd.ticket.arrived, attempt.first_byte_at
                self.dispatcher.observe_first_byte(
                    pd.routing.decode, first_byte_at - arrived - pd.queued_s
                )
                self.metrics.decode_first_token(pd.name, first_byte_at - sent_at)
                self.metrics.answered(
                    pd.name,
                    route.id,
                    attempt.status,
                    pd.queued_s,
                    first_byte_at - arrived,
                    time.monotonic() - arrived,
                )
                self.access_log.write(
                    pd.request_id, pd.name, route.id, attempt.status, arrived, pd.queued_s,
                    first_byte_at,
                )  # fmt: skip
                return
            self.dispatcher.mark_suspect(route.id)
            failures.append(f"{route.id}: {attempt.retryable_detail}")
            if attempt_number < retries:
                self.metrics.retried(pd.name, route.id)
                if not attempt.status:  # no HTTP answer: the process may be gone
                    await self._await_news(pool, route, ticket)
            route = None
        raise errors.engine_unavailable(pd.name, "; ".join(failures))

    async def _prefill(self, pd: PdRequest, group: PdGroup) -> PrefillVerdict | tuple[int, bytes]:
        """P's verdict with its kv_transfer_params, or (status, body) of P's 4xx.

        A P that cannot be reached, answers 5xx or answers what D cannot use is suspect,
        and the next P of the group gets the request, up to the gateway's retries.
        """
        headers = without_accept_encoding(pd.headers)
        ticket = pd.fresh_ticket()
        key = prefix_key(pd.request) if self.dispatcher.balance == "prefix" else None
        failures: list[str] = []
        retries = self.settings.retries
        for attempt_number in range(retries + 1):
            route = await self._acquire(pd, group.prefill, group.prefill_name, ticket, key)
            payload = orjson.dumps(prefill_body(pd.body_for(route)))
            sent_at = time.monotonic()
            try:
                status, data = await fetch_whole(
                    pd.upstream,
                    route.address,
                    pd.target,
                    pd.headers_for(route, headers),
                    payload,
                    PREFILL_ANSWER_LIMIT,
                )
                verdict = judge_prefill(status, data, route.id)
            except UpstreamError as exc:
                verdict = PrefillVerdict(retry=str(exc), unreachable=True)
            finally:
                self.dispatcher.release(route.id)
            if verdict.relay:
                return status, data
            if not verdict.retry:
                self.metrics.prefilled(pd.name, time.monotonic() - sent_at)
                return verdict
            self.dispatcher.mark_suspect(route.id)
            failures.append(f"{route.id}: {verdict.retry}")
            if attempt_number < retries:
                self.metrics.retried(pd.name, route.id)
                if verdict.unreachable:
                    await self._await_news(group.prefill, route, ticket)
        raise prefill_step_failed(pd.name, failures)

    async def _relay_error(self, pd: PdRequest, status: int, data: bytes) -> None:
        """P refused the request (4xx): the client gets P's words, as from any engine."""
        if pd.loading:
            event = b"data: " + data.strip().replace(b"\n", b" ") + b"\n\ndata: [DONE]\n\n"
            await pd.send({"type": "http.response.body", "body": event, "more_body": True})
            await pd.send({"type": "http.response.body", "body": b""})
        else:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"x-request-id", pd.request_id),
            ]
            await pd.send({"type": "http.response.start", "status": status, "headers": headers})
            await pd.send({"type": "http.response.body", "body": data})
        spent = time.monotonic() - pd.ticket.arrived
        self.metrics.answered(pd.name, "-", status, pd.queued_s, spent, spent)
        self.access_log.write(pd.request_id, pd.name, "-", status, pd.ticket.arrived)
