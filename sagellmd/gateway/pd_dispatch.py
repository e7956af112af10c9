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
from sagellmd.gateway.client_request import ClientGone
from sagellmd.gateway.dispatch import COMING_UP, Dispatcher
from sagellmd.gateway.errors import GatewayError
from sagellmd.gateway.metrics import GatewayMetrics
from sagellmd.gateway.own_answers import SSE_HEADERS
from sagellmd.gateway.pd_protocol import (
    decode_body,
    kv_transfer_params_of,
    prefill_body,
    wants_prefill,
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


@dataclass(slots=True, frozen=True)
class PrefillVerdict:
    """What P's answer means for the request: go on to D, relay P's answer, or try another P."""

    params: dict[str, Any] | None = None
    relay: bool = False  # a 4xx: the request itself is wrong; the client gets P's words
    retry: str = ""  # why this P failed (connect, 5xx, an answer D cannot use)


def judge_prefill(status: int, data: bytes, engine_id: str) -> PrefillVerdict:
    """Pure: P's status and body to the next step."""
    if 400 <= status < 500:
        return PrefillVerdict(relay=True)
    if status != 200:
        return PrefillVerdict(retry=f"HTTP {status}")
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        answer = data
    try:
        return PrefillVerdict(params=kv_transfer_params_of(answer, engine_id))
    except GatewayError as error:
        return PrefillVerdict(retry=error.message)


def prefill_failed(name: str, failures: list[str]) -> GatewayError:
    return GatewayError(
        502,
        "prefill_failed",
        f"The prefill step for {name!r} failed on every prefill instance tried:"
        f" {'; '.join(failures)}",
        type="server_error",
    )


def _without_accept_encoding(headers: bytes) -> bytes:
    """P's JSON is parsed here: it must not come compressed."""
    if b"accept-encoding" not in headers:
        return headers
    lines = headers.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.startswith(b"accept-encoding:"))


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
        task = asyncio.current_task()
        assert task is not None
        gone = finished = False

        async def watch_disconnect() -> None:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not finished:
                gone = True
                task.cancel()

        watcher = asyncio.create_task(watch_disconnect())
        stream = request.get("stream") is True
        loading = stream and self._coming_up(routing)
        try:
            if loading:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [*SSE_HEADERS, (b"x-request-id", request_id)],
                    }
                )
            try:
                await self._serve(
                    scope, send, request, name, routing, ticket, headers, request_id, loading
                )
            except GatewayError as error:
                if not loading:
                    raise
                # The answer began already: the error is the stream's last event.
                self.metrics.rejected(name, error.code)
                await send(
                    {"type": "http.response.body", "body": error.sse_event(), "more_body": True}
                )
                await send({"type": "http.response.body", "body": b""})
                self.access_log.write(request_id, name, "-", error.status, ticket.arrived)
        except asyncio.CancelledError:
            if gone:
                task.uncancel()
                raise ClientGone() from None
            raise
        finally:
            finished = True
            watcher.cancel()

    async def _acquire(
        self,
        pool: ModelGroup,
        pool_name: str,
        ticket: Ticket,
        key: bytes | None,
        send: Any,
        loading: bool,
    ) -> Route:
        if loading:
            return await self._acquire_loading(pool, pool_name, ticket, key, send)
        return await self.dispatcher.acquire(pool, pool_name, ticket, key)

    async def _serve(
        self,
        scope: dict[str, Any],
        send: Any,
        request: dict[str, Any],
        name: str,
        routing: PdRouting,
        ticket: Ticket,
        headers: bytes,
        request_id: bytes,
        loading: bool,
    ) -> None:
        upstream = self._upstream()
        assert upstream is not None
        target = scope["raw_path"] or scope["path"].encode()
        path = target
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        dispatcher = self.dispatcher
        decode = await self._acquire(
            routing.decode, routing.decode_name, ticket, None, send, loading
        )
        queued_s = ticket.queued_s
        group = routing.group_of(decode)
        params: dict[str, Any] | None = None
        try:
            if path in PD_PATHS and wants_prefill(request, group.threshold_input_tokens):
                self.metrics.pd_routed(name, "prefill_decode")
                prefilled = await self._prefill(
                    upstream,
                    group,
                    request,
                    name,
                    ticket,
                    headers,
                    request_id,
                    target,
                    send,
                    loading,
                )
            else:
                self.metrics.pd_routed(name, "decode_only")
                prefilled = (None, 0.0)
        except BaseException:
            dispatcher.release(decode.id)
            raise
        if isinstance(prefilled[0], int):  # P's 4xx: the client's request is at fault
            dispatcher.release(decode.id)
            status, data = prefilled
            await self._relay_error(send, status, data, request_id, loading)
            spent = time.monotonic() - ticket.arrived
            self.metrics.answered(name, "-", status, queued_s, spent, spent)
            self.access_log.write(request_id, name, "-", status, ticket.arrived)
            return
        params, prefill_queued_s = prefilled
        queued_s += prefill_queued_s
        # D: failover before its first byte to another D that can fetch these blocks.
        pool, pool_name = (
            (group.decode, group.decode_name) if params else (routing.decode, routing.decode_name)
        )
        d_ticket = Ticket(ticket.arrived, ticket.priority, ticket.deadline, ticket.client)
        d_ticket.tried.add(decode.id)
        failures: list[str] = []
        route: Route | None = decode
        for attempt_number in range(self.settings.retries + 1):
            if route is None:
                route = await self._acquire(pool, pool_name, d_ticket, None, send, loading)
                queued_s += d_ticket.queued_s
            body = dict(request)
            body["model"] = route.served_model
            payload = orjson.dumps(decode_body(body, params))
            sent_headers = headers
            if route.takes_request_id(request_id):
                sent_headers += b"x-request-id: " + request_id + b"\r\n"
            sent_at = time.monotonic()
            try:
                attempt = await forward(
                    upstream,
                    route.address,
                    target,
                    sent_headers,
                    payload,
                    request.get("stream") is True,
                    request_id,
                    send,
                    attempt_number == self.settings.retries,
                    started=loading,
                )
            finally:
                dispatcher.release(route.id)
            if attempt.sent:
                done = time.monotonic()
                dispatcher.observe_first_byte(
                    routing.decode, attempt.first_byte_at - ticket.arrived - queued_s
                )
                self.metrics.decode_first_token(name, attempt.first_byte_at - sent_at)
                self.metrics.answered(
                    name,
                    route.id,
                    attempt.status,
                    queued_s,
                    attempt.first_byte_at - ticket.arrived,
                    done - ticket.arrived,
                )
                self.access_log.write(
                    request_id,
                    name,
                    route.id,
                    attempt.status,
                    ticket.arrived,
                    queued_s,
                    attempt.first_byte_at,
                )
                return
            dispatcher.mark_suspect(route.id)
            failures.append(f"{route.id}: {attempt.retryable_detail}")
            if attempt_number < self.settings.retries:
                self.metrics.retried(name, route.id)
            route = None
        raise errors.engine_unavailable(name, "; ".join(failures))

    async def _prefill(
        self,
        upstream: UpstreamPool,
        group: PdGroup,
        request: dict[str, Any],
        name: str,
        ticket: Ticket,
        headers: bytes,
        request_id: bytes,
        target: bytes,
        send: Any,
        loading: bool,
    ) -> tuple[dict[str, Any] | None, float] | tuple[int, bytes]:
        """P's kv_transfer_params and the time queued for P; (status, body) of P's 4xx.

        A P that cannot be reached, answers 5xx or answers what D cannot use is suspect,
        and the next P of the group gets the request, up to the gateway's retries.
        """
        p_headers = _without_accept_encoding(headers)
        p_ticket = Ticket(ticket.arrived, ticket.priority, ticket.deadline, ticket.client)
        key = prefix_key(request) if self.dispatcher.balance == "prefix" else None
        failures: list[str] = []
        queued_s = 0.0
        for attempt_number in range(self.settings.retries + 1):
            route = await self._acquire(
                group.prefill, group.prefill_name, p_ticket, key, send, loading
            )
            queued_s += p_ticket.queued_s
            body = dict(request)
            body["model"] = route.served_model
            sent_headers = p_headers
            if route.takes_request_id(request_id):
                sent_headers += b"x-request-id: " + request_id + b"\r\n"
            sent_at = time.monotonic()
            try:
                status, data = await fetch_whole(
                    upstream,
                    route.address,
                    target,
                    sent_headers,
                    orjson.dumps(prefill_body(body)),
                    PREFILL_ANSWER_LIMIT,
                )
                verdict = judge_prefill(status, data, route.id)
            except UpstreamError as exc:
                verdict = PrefillVerdict(retry=str(exc))
            finally:
                self.dispatcher.release(route.id)
            if verdict.relay:
                return status, data
            if not verdict.retry:
                self.metrics.prefilled(name, time.monotonic() - sent_at)
                return verdict.params, queued_s
            self.dispatcher.mark_suspect(route.id)
            failures.append(f"{route.id}: {verdict.retry}")
            if attempt_number < self.settings.retries:
                self.metrics.retried(name, route.id)
        raise prefill_failed(name, failures)

    async def _relay_error(
        self, send: Any, status: int, data: bytes, request_id: bytes, started: bool
    ) -> None:
        if started:
            event = b"data: " + data.strip().replace(b"\n", b" ") + b"\n\ndata: [DONE]\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"x-request-id", request_id),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
