"""The gateway's line to the daemon: the route table long-poll in, activity reports out."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson

from sagellmd.gateway.dispatch import Dispatcher
from sagellmd.gateway.routes import RouteTable
from sagellmd.gateway.settings import GatewaySettings
from sagellmd.gateway.upstream import UpstreamPool

log = logging.getLogger("sagellmd.gateway.daemon")

POLL_WAIT_S = 30
RETRY_BASE_S = 0.05
RETRY_MAX_S = 1.0
REPORT_EVERY_S = 0.5
HEARTBEAT_S = 3.0
MIN_REPORT_GAP_S = 0.02


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
        self._pool: UpstreamPool | None = None
        parsed = urlsplit(settings.daemon_url)
        self._address = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._tasks: list[asyncio.Task[None]] = []
        self._report_now = asyncio.Event()
        self._reported_changes = -1
        self._reported_at = 0.0
        dispatcher.on_demand = self._report_soon
        dispatcher.on_busy = self._report_soon

    def _token(self) -> str:
        try:
            return self.settings.token_path.read_text().strip()
        except OSError:
            return os.environ.get("SAGELLM_TOKEN", "")

    def start(self) -> None:
        # Our own client, not aiohttp's: importing aiohttp alone takes 0.2 s of a restart.
        self._pool = UpstreamPool()
        self._tasks = [
            asyncio.create_task(self._poll_routes(), name="routes"),
            asyncio.create_task(self._report(), name="activity"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._report_once(), 1.0)
            except Exception:  # noqa: BLE001 - the daemon may be gone; nothing to tell it then
                pass
            self._pool.close()

    async def _call(self, method: bytes, target: str, body: bytes, timeout_s: float) -> bytes:
        """One request to the daemon's API; anything but a 2xx raises."""
        assert self._pool is not None
        headers = f"authorization: Bearer {self._token()}\r\n".encode()
        if body:
            headers += b"content-type: application/json\r\n"

        async def call() -> bytes:
            assert self._pool is not None
            answer = await self._pool.request(method, self._address, target.encode(), headers, body)
            try:
                data = await answer.read()
            except BaseException:
                answer.close()
                raise
            answer.release()
            if not 200 <= answer.status < 300:
                raise RuntimeError(f"HTTP {answer.status}: {data[:200]!r}")
            return data

        return await asyncio.wait_for(call(), timeout_s)

    async def _poll_routes(self) -> None:
        delay = RETRY_BASE_S
        failed_before = False
        while True:
            version = self.dispatcher.table.version
            target = "/v1/routes" + (f"?after={version}&wait={POLL_WAIT_S}" if version >= 0 else "")
            try:
                document = orjson.loads(await self._call(b"GET", target, b"", POLL_WAIT_S + 10))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: keep the last table, retry
                if self.connected or not failed_before:
                    log.warning(
                        "route table: daemon unreachable (%s); serving the last table",
                        str(exc) or type(exc).__name__,
                    )
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

    def _report_soon(self, name: str) -> None:
        """Report at once (a request waits for an engine, or an idle-able one got busy)."""
        self._report_now.set()

    async def _report(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._report_now.wait(), REPORT_EVERY_S)
            except TimeoutError:
                pass
            self._report_now.clear()
            self.tick()
            quiet_s = time.monotonic() - self._reported_at
            # Unchanged figures are still sent now and then: the daemon ignores old reports.
            if self.dispatcher.changes == self._reported_changes and quiet_s < HEARTBEAT_S:
                continue
            try:
                await self._report_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next period tries again
                log.debug("activity report failed: %s", exc)
            # Reports sent at once are still at most one per MIN_REPORT_GAP_S.
            await asyncio.sleep(MIN_REPORT_GAP_S)

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
            "demand": dispatcher.demand(),
            "totals": self.totals(),
        }

    async def _report_once(self) -> None:
        changes = self.dispatcher.changes
        await self._call(b"POST", "/v1/gateway/activity", orjson.dumps(self.activity()), 2.0)
        self._reported_changes = changes
        self._reported_at = time.monotonic()
