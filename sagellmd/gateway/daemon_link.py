"""The gateway's line to the daemon: the route table long-poll in, activity reports out."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import aiohttp
import orjson

from sagellmd.gateway.dispatch import Dispatcher
from sagellmd.gateway.routes import RouteTable
from sagellmd.gateway.settings import GatewaySettings

log = logging.getLogger("sagellmd.gateway.daemon")

POLL_WAIT_S = 30
RETRY_BASE_S = 0.05
RETRY_MAX_S = 1.0
REPORT_EVERY_S = 0.5


class DaemonLink:
    """Keeps the dispatcher's table current; while the daemon is away the last table serves."""

    def __init__(
        self,
        settings: GatewaySettings,
        dispatcher: Dispatcher,
        totals: Callable[[], dict[str, int]],
        tick: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.totals = totals
        # Called every report period: the access log flushes with it.
        self.tick = tick
        self.started_at = time.time()
        self.connected = False
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._demand = asyncio.Event()
        self._reported_changes = -1
        dispatcher.on_demand = self._on_demand

    def _token(self) -> str:
        try:
            return self.settings.token_path.read_text().strip()
        except OSError:
            return os.environ.get("SAGELLM_TOKEN", "")

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=2),
            connector=aiohttp.TCPConnector(limit=4, keepalive_timeout=3),
        )
        self._tasks = [
            asyncio.create_task(self._poll_routes(), name="routes"),
            asyncio.create_task(self._report(), name="activity"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            try:
                await asyncio.wait_for(self._report_once(), 1.0)
            except Exception:  # noqa: BLE001 - the daemon may be gone; nothing to tell it then
                pass
            await self._session.close()

    async def _poll_routes(self) -> None:
        assert self._session is not None
        delay = RETRY_BASE_S
        failed_before = False
        while True:
            version = self.dispatcher.table.version
            url = f"{self.settings.daemon_url}/v1/routes" + (
                f"?after={version}&wait={POLL_WAIT_S}" if version >= 0 else ""
            )
            try:
                async with self._session.get(
                    url,
                    headers={"Authorization": f"Bearer {self._token()}"},
                    timeout=aiohttp.ClientTimeout(total=POLL_WAIT_S + 10, sock_connect=2),
                ) as answer:
                    body = await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"HTTP {answer.status}: {body[:200]!r}")
                document = orjson.loads(body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: keep the last table, retry
                if self.connected or not failed_before:
                    log.warning("route table: daemon unreachable (%s); serving the last table", exc)
                self.connected = False
                failed_before = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if not self.connected:
                log.info("route table: connected to the daemon at %s", self.settings.daemon_url)
            self.connected = True
            delay = RETRY_BASE_S
            if document.get("version") != self.dispatcher.table.version:
                self.dispatcher.set_table(RouteTable.from_json(document))

    def _on_demand(self, name: str) -> None:
        self._demand.set()

    async def _report(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._demand.wait(), REPORT_EVERY_S)
            except TimeoutError:
                pass
            self._demand.clear()
            self.tick()
            if self.dispatcher.changes == self._reported_changes:
                continue
            try:
                await self._report_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next period tries again
                log.debug("activity report failed: %s", exc)

    def activity(self) -> dict[str, object]:
        dispatcher = self.dispatcher
        engines = {}
        for engine_id in dispatcher.table.engines:
            engines[engine_id] = {
                "inflight": dispatcher.inflight.get(engine_id, 0),
                "queued": dispatcher.queued_for(engine_id),
                "requests": dispatcher.requests.get(engine_id, 0),
                "last_request_at": dispatcher.last_request_at.get(engine_id),
            }
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "route_version": dispatcher.table.version,
            "engines": engines,
            "models": {name: {"queued": n} for name, n in dispatcher.queue_lengths().items()},
            "totals": self.totals(),
        }

    async def _report_once(self) -> None:
        assert self._session is not None
        changes = self.dispatcher.changes
        async with self._session.post(
            f"{self.settings.daemon_url}/v1/gateway/activity",
            data=orjson.dumps(self.activity()),
            headers={
                "Authorization": f"Bearer {self._token()}",
                "Content-Type": "application/json",
            },
            timeout=aiohttp.ClientTimeout(total=2),
        ) as answer:
            await answer.read()
            if answer.status < 300:
                self._reported_changes = changes
