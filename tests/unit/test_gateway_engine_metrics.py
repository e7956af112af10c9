"""Owns the tests of sagellmd/gateway/engine_metrics.py: the vLLM /metrics parser and scraper.

The scraper runs against a real aiohttp server on a free loopback port.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from sagellmd.gateway.balance import KvLoad
from sagellmd.gateway.engine_metrics import KvScraper, parse_vllm_metrics

# Trimmed from a vLLM 0.11 (v1 engine) /metrics page.
VLLM_V1 = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12044.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 4.2e-01
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 51234.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="Qwen/Qwen2.5"} 0.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 812.0
"""

# vLLM 0.6 (v0 engine): the KV gauge was named after the GPU, and no engine label.
VLLM_V0 = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="facebook/opt-125m"} 2.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="facebook/opt-125m"} 0.0
vllm:num_requests_waiting{model_name="facebook/opt-125m"} 0.0
vllm:gpu_cache_usage_perc{model_name="facebook/opt-125m"} 0.0625
"""


def test_parses_a_v1_page():
    assert parse_vllm_metrics(VLLM_V1, now=12.5) == KvLoad(
        waiting=3.0, running=7.0, kv_usage=0.42, scraped_at=12.5
    )


def test_parses_the_older_gauge_name():
    assert parse_vllm_metrics(VLLM_V0, now=1.0) == KvLoad(
        waiting=0.0, running=2.0, kv_usage=0.0625, scraped_at=1.0
    )


def test_new_gauge_wins_over_the_old_one():
    text = "vllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.1\n"
    assert parse_vllm_metrics(text, 0.0).kv_usage == 0.1


def test_data_parallel_ranks_are_summed_and_kv_use_averaged():
    text = """\
vllm:num_requests_waiting{engine="0",model_name="m"} 2
vllm:num_requests_waiting{engine="1",model_name="m"} 5
vllm:num_requests_running{engine="0",model_name="m"} 1e1
vllm:num_requests_running{engine="1",model_name="m"} 6.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6
"""
    load = parse_vllm_metrics(text, 3.0)
    assert (load.waiting, load.running) == (7.0, 16.0)
    assert load.kv_usage == pytest.approx(0.4)


def test_no_labels_timestamps_and_odd_label_values():
    text = (
        "vllm:num_requests_waiting 4 1700000000000\n"
        'vllm:num_requests_running{model_name="a}b c"} 2.5e+00\n'
        "vllm:kv_cache_usage_perc\t0.5\n"
    )
    assert parse_vllm_metrics(text, 0.0) == KvLoad(4.0, 2.5, 0.5, 0.0)


def test_missing_gauges_count_as_zero():
    assert parse_vllm_metrics("vllm:num_requests_waiting 9\n", 0.0) == KvLoad(9.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# HELP vllm:num_requests_waiting waiting\n# TYPE vllm:num_requests_waiting gauge\n",
        'process_cpu_seconds_total 12.0\nhttp_requests_total{code="200"} 5\n',
        "vllm:num_requests_waiting_total 3\nvllm:num_requests_waiting garbage\n",
        "vllm:num_requests_waiting NaN\n",
    ],
)
def test_none_when_no_gauge_is_present(text):
    assert parse_vllm_metrics(text, 0.0) is None


class _Engine:
    """A tiny real HTTP server with a /metrics page the test changes."""

    def __init__(self) -> None:
        self.body = "vllm:num_requests_waiting 1\n"
        self.status = 200
        self.hits = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _metrics(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=self.status, text=self.body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def _until(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_scraper_keeps_the_loads_of_every_engine_fresh():
    async def scenario() -> None:
        a, b = _Engine(), _Engine()
        await a.start()
        await b.start()
        b.body = VLLM_V1
        origins = {"a": a.url, "b": b.url + "/"}
        try:
            async with aiohttp.ClientSession() as session:
                scraper = KvScraper(lambda: origins, session, interval_s=0.02)
                scraper.start()
                await _until(lambda: {"a", "b"} <= scraper.loads.keys())
                assert scraper.loads["a"].waiting == 1.0
                assert scraper.loads["b"].kv_usage == pytest.approx(0.42)
                a.body = "vllm:num_requests_waiting 8\n"
                await _until(lambda: scraper.loads["a"].waiting == 8.0)
                # It polls: several rounds happened, each stamped with the clock.
                assert a.hits >= 2
                assert time.monotonic() - scraper.loads["a"].scraped_at < 1.0
                # An engine that leaves the route table leaves the loads.
                del origins["b"]
                await _until(lambda: "b" not in scraper.loads)
                await scraper.stop()
                await asyncio.sleep(0.05)  # a request cancelled in flight may still land
                hits = a.hits
                await asyncio.sleep(0.1)
                assert a.hits == hits  # stopped means no more requests
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_scraper_errors_leave_the_last_load_to_go_stale():
    async def scenario() -> None:
        engine = _Engine()
        await engine.start()
        origins = {"e": engine.url}
        try:
            async with aiohttp.ClientSession() as session:
                scraper = KvScraper(lambda: origins, session, interval_s=0.02, timeout_s=0.2)
                scraper.start()
                await _until(lambda: "e" in scraper.loads)
                first = scraper.loads["e"]
                engine.status = 500
                hits = engine.hits
                await _until(lambda: engine.hits >= hits + 3)
                assert scraper.loads["e"] is first  # a 500 is no news
                engine.status = 200
                engine.body = "# nothing from vLLM here\n"
                hits = engine.hits
                await _until(lambda: engine.hits >= hits + 3)
                assert scraper.loads["e"] is first  # nor is a page without the gauges
                await engine.stop()  # connection refused from now on
                await asyncio.sleep(0.1)
                assert scraper.loads["e"] is first
                await scraper.stop()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_scraper_survives_a_failing_origins_callable_and_restarts():
    async def scenario() -> None:
        engine = _Engine()
        await engine.start()
        calls = {"n": 0}

        def origins() -> dict[str, str]:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("route table not loaded yet")
            return {"e": engine.url}

        try:
            async with aiohttp.ClientSession() as session:
                scraper = KvScraper(origins, session, interval_s=0.02)
                scraper.start()
                await _until(lambda: "e" in scraper.loads)
                await scraper.stop()
                await scraper.stop()  # twice is harmless
                scraper.loads.clear()
                scraper.start()
                await _until(lambda: "e" in scraper.loads)
                await scraper.stop()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_bad_interval_is_refused():
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ValueError, match="interval_s"):
                KvScraper(dict, session, interval_s=0)

    asyncio.run(scenario())
