"""The engines' own load for kv-aware balancing: vLLM's /metrics, parsed and scraped.

`parse_vllm_metrics` is pure; `KvScraper` is the one piece of I/O, a polling asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import aiohttp

from sagellmd.gateway.balance import KvLoad

log = logging.getLogger(__name__)

_WAITING = "vllm:num_requests_waiting"
_RUNNING = "vllm:num_requests_running"
_KV_USAGE = "vllm:kv_cache_usage_perc"
# vLLM before 0.10 (the v0 engine) named the same gauge after the GPU.
_KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
_WANTED = frozenset((_WAITING, _RUNNING, _KV_USAGE, _KV_USAGE_OLD))


def parse_vllm_metrics(text: str, now: float) -> KvLoad | None:
    """The load in a Prometheus exposition of vLLM, stamped `now`; None when it has none.

    Queue and running counts are summed over label sets (one per model or data-parallel
    rank); the KV use, a 0-1 fraction, is their mean. A missing gauge counts as 0.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):  # comments, blank lines, other metrics
            continue
        brace = line.find("{")
        if brace == -1:
            fields = line.split()
            if len(fields) < 2:
                continue
            name, raw = fields[0], fields[1]
        else:
            name = line[:brace]
            fields = line[line.rfind("}") + 1 :].split()
            if not fields:
                continue
            raw = fields[0]
        if name not in _WANTED:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if value != value:  # NaN: vLLM has nothing to say yet
            continue
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1
    if not sums:
        return None
    usage_name = _KV_USAGE if _KV_USAGE in sums else _KV_USAGE_OLD
    usage = sums[usage_name] / counts[usage_name] if usage_name in sums else 0.0
    return KvLoad(
        waiting=sums.get(_WAITING, 0.0),
        running=sums.get(_RUNNING, 0.0),
        kv_usage=usage,
        scraped_at=now,
    )


class KvScraper:
    """Polls `<origin>/metrics` of every engine each `interval_s` and keeps `loads` by engine id.

    A failed scrape leaves the engine's last load in place; its `scraped_at` then ages until
    balancing treats it as stale. Engines that leave the origins leave `loads`.
    """

    def __init__(
        self,
        origins: Callable[[], Mapping[str, str]],
        session: aiohttp.ClientSession,
        interval_s: float = 0.2,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s}")
        self.loads: dict[str, KvLoad] = {}
        self.interval_s = interval_s
        self._origins = origins
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling in the running event loop (again after stop() is fine)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kv-scraper")

    async def stop(self) -> None:
        """Stop polling and wait for the task to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def scrape_once(self) -> None:
        """One round: every engine's /metrics at once."""
        origins = dict(self._origins())
        for engine_id in self.loads.keys() - origins.keys():
            del self.loads[engine_id]
        if origins:
            await asyncio.gather(*(self._scrape(eid, url) for eid, url in origins.items()))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.scrape_once()
            except Exception:  # a bad origins callable must not end the polling for good
                log.exception("kv scrape round failed")
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))

    async def _scrape(self, engine_id: str, origin: str) -> None:
        url = origin.rstrip("/") + "/metrics"
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                if response.status != 200:
                    log.debug("kv scrape engine=%s status=%s", engine_id, response.status)
                    return
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError) as error:
            log.debug("kv scrape engine=%s error=%r", engine_id, error)
            return
        load = parse_vllm_metrics(text, self._clock())
        if load is not None:
            self.loads[engine_id] = load
