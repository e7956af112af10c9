"""The gateway's Prometheus metrics, with label children cached: they are touched per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip


class _Live(Collector):
    """Gauges read at scrape time from the dispatcher (queue lengths, in flight)."""

    def __init__(
        self, queues: Callable[[], dict[str, int]], inflight: Callable[[], dict[str, int]]
    ) -> None:
        self._queues = queues
        self._inflight = inflight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily(
            "sagellm_gateway_queue_length", "Requests waiting per model", labels=["model"]
        )
        for model, length in self._queues().items():
            waiting.add_metric([model], length)
        yield waiting
        running = GaugeMetricFamily(
            "sagellm_gateway_inflight", "Requests in flight per engine", labels=["engine"]
        )
        for engine, count in self._inflight().items():
            running.add_metric([engine], count)
        yield running


class GatewayMetrics:
    def __init__(
        self, queues: Callable[[], dict[str, int]], inflight: Callable[[], dict[str, int]]
    ) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "sagellm_gateway_requests",
            "Requests answered, by model, engine and status code",
            ["model", "engine", "code"],
            registry=self.registry,
        )
        self._rejections = Counter(
            "sagellm_gateway_rejections",
            "Requests the gateway answered itself with an error, by reason",
            ["model", "reason"],
            registry=self.registry,
        )
        self._retries = Counter(
            "sagellm_gateway_retries",
            "Requests retried on another engine after a failure before the first byte",
            ["model", "engine"],
            registry=self.registry,
        )
        self._queue_wait = Histogram(
            "sagellm_gateway_queue_wait_seconds",
            "Time a request waited for a free engine",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._ttfb = Histogram(
            "sagellm_gateway_time_to_first_byte_seconds",
            "Arrival to the first byte of the answer sent",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._duration = Histogram(
            "sagellm_gateway_request_duration_seconds",
            "Arrival to the last byte of the answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Prefill/decode groups: each phase on its own, so TTFT can be tuned where it goes.
        self._prefill = Histogram(
            "sagellm_gateway_prefill_seconds",
            "Prefill step of a disaggregated model: request to P sent to its answer read",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._decode_first_token = Histogram(
            "sagellm_gateway_decode_first_token_seconds",
            "Decode step of a disaggregated model: request to D sent to its first byte",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._pd_requests = Counter(
            "sagellm_gateway_pd_requests",
            "Requests for a disaggregated model, by route: prefill_decode (P then D) or"
            " decode_only (a prompt under threshold_input_tokens, or no P step)",
            ["model", "route"],
            registry=self.registry,
        )
        self.registry.register(_Live(queues, inflight))
        self._children: dict[tuple, object] = {}
        self.totals = {"requests": 0, "rejected": 0, "retries": 0, "errors": 0}

    def _child(self, metric: object, *labels: str) -> object:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)  # type: ignore[attr-defined]
            self._children[key] = child
        return child

    def answered(
        self, model: str, engine: str, code: int, queued_s: float, ttfb_s: float, total_s: float
    ) -> None:
        self.totals["requests"] += 1
        if code >= 500:
            self.totals["errors"] += 1
        self._child(self._requests, model, engine, str(code)).inc()  # type: ignore[attr-defined]
        self._child(self._queue_wait, model).observe(queued_s)  # type: ignore[attr-defined]
        self._child(self._ttfb, model).observe(ttfb_s)  # type: ignore[attr-defined]
        self._child(self._duration, model).observe(total_s)  # type: ignore[attr-defined]

    def rejected(self, model: str, reason: str) -> None:
        self.totals["rejected"] += 1
        self._child(self._rejections, model, reason).inc()  # type: ignore[attr-defined]

    def retried(self, model: str, engine: str) -> None:
        self.totals["retries"] += 1
        self._child(self._retries, model, engine).inc()  # type: ignore[attr-defined]

    def prefilled(self, model: str, seconds: float) -> None:
        self._child(self._prefill, model).observe(seconds)  # type: ignore[attr-defined]

    def decode_first_token(self, model: str, seconds: float) -> None:
        self._child(self._decode_first_token, model).observe(seconds)  # type: ignore[attr-defined]

    def pd_routed(self, model: str, route: str) -> None:
        self._child(self._pd_requests, model, route).inc()  # type: ignore[attr-defined]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
