"""Dynamic batching: the texts of concurrent requests gathered into model calls on one thread."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sagellmd.engines.embedding_model import EncodedBatch
from sagellmd.errors import SagellmError

Encode = Callable[[list[str]], EncodedBatch]

# Smoothing of the texts/s estimate behind Retry-After: about the last ten model calls.
_RATE_SMOOTHING = 0.2
_RETRY_AFTER_MAX_S = 60


class QueueFullError(SagellmError):
    """Too many texts are waiting for the model; the client should retry later."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, {"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


def plan_batch(waiting: Sequence[int], capacity: int) -> list[int]:
    """How many texts to take from each waiting request (FIFO order) for one model call.

    Capacity is shared out evenly first, so single-text requests queued behind a request of
    2,048 inputs ride in the next call instead of waiting for all of it.
    """
    takes = [0] * len(waiting)
    left = capacity
    # Each request in the call gets at least one text, so later ones cannot get any.
    active = [i for i, count in enumerate(waiting[:capacity]) if count > 0]
    while left > 0 and active:
        share = max(1, left // len(active))
        for i in list(active):
            give = min(share, waiting[i] - takes[i], left)
            takes[i] += give
            left -= give
            if takes[i] == waiting[i]:
                active.remove(i)
            if left == 0:
                break
    return takes


def retry_after_seconds(queued_texts: int, texts_per_second: float) -> int:
    """Whole seconds until the texts now queued should have gone through the model."""
    if texts_per_second <= 0:
        return 1
    return max(1, min(_RETRY_AFTER_MAX_S, math.ceil(queued_texts / texts_per_second)))


@dataclass(eq=False)
class Ticket:
    """A request announced by ``incoming()``; used once it is submitted or given up."""

    used: bool = False


@dataclass(eq=False)
class _Job:
    """One request's texts on their way through one or more model calls."""

    texts: list[str]
    future: asyncio.Future[EncodedBatch]
    enqueued_at: float
    taken: int = 0
    done: int = 0
    vectors: np.ndarray | None = None
    token_counts: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.taken


@dataclass(frozen=True)
class _Slice:
    job: _Job
    start: int
    stop: int


@dataclass
class BatcherStats:
    """Counters since start; read by GET /stats."""

    requests: int = 0
    texts: int = 0
    tokens: int = 0
    model_calls: int = 0
    largest_batch: int = 0
    rejected: int = 0
    failed_calls: int = 0
    encode_seconds: float = 0.0


class DynamicBatcher:
    """Feeds one encode thread from a bounded FIFO of request texts.

    The thread takes up to ``max_batch_size`` texts per call. When it is idle it waits for
    more texts for at most ``max_wait_s`` after the oldest arrived, and only while requests
    are known to be on their way (``incoming()``), so a lone client pays no wait.
    """

    def __init__(
        self,
        encode: Encode,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self._encode = encode
        self._clock = clock
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._queued = 0
        self._incoming = 0
        self._texts_per_second = 0.0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the encode thread; results are handed back on ``loop``."""
        self._loop = loop
        # Daemon: a stop must not wait for a long model call to finish.
        self._thread = threading.Thread(target=self._run, name="embedding-encode", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @contextmanager
    def incoming(self) -> Iterator[Ticket]:
        """Mark a request as on its way while its body is read, so an idle thread waits for it.

        Submit inside the block with the ticket: the hand-over from "on its way" to "queued"
        then happens under one lock, and the thread cannot slip a batch in between.
        """
        ticket = Ticket()
        with self._cond:
            self._incoming += 1
        try:
            yield ticket
        finally:
            if not ticket.used:
                with self._cond:
                    self._incoming -= 1
                    ticket.used = True
                    self._cond.notify()

    async def submit(self, texts: list[str], ticket: Ticket | None = None) -> EncodedBatch:
        """Vectors for ``texts`` in input order; raise QueueFullError when over the bound."""
        assert self._loop is not None, "start() first"
        job = _Job(texts, self._loop.create_future(), self._clock())
        with self._cond:
            if ticket is not None and not ticket.used:
                ticket.used = True
                self._incoming -= 1
            # Wakes an idle thread whether this request is queued or refused.
            self._cond.notify()
            # An empty queue takes any request, so one larger than the bound is still served.
            if self._queued and self._queued + len(texts) > self.max_queue:
                self.stats.rejected += 1
                retry = retry_after_seconds(self._queued, self._texts_per_second)
                raise QueueFullError(
                    f"{self._queued} texts are waiting for the model (at most {self.max_queue}); "
                    f"retry in {retry}s",
                    retry,
                )
            self._jobs.append(job)
            self._queued += len(texts)
            self.stats.requests += 1
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)
            raise

    def _drop(self, job: _Job) -> None:
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                self._queued -= job.remaining

    def _take(self) -> list[_Slice] | None:
        """Block until a batch is due, then remove it from the queue; None once closed."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = self._jobs[0].enqueued_at + self.max_wait_s
            while self._queued < self.max_batch_size and self._incoming and not self._closed:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            takes = plan_batch([job.remaining for job in self._jobs], self.max_batch_size)
            slices: list[_Slice] = []
            for job, count in zip(list(self._jobs), takes, strict=False):
                if count == 0:
                    continue
                slices.append(_Slice(job, job.taken, job.taken + count))
                job.taken += count
                self._queued -= count
                if job.remaining == 0:
                    self._jobs.remove(job)
            return slices

    def _run(self) -> None:
        assert self._loop is not None
        while (slices := self._take()) is not None:
            texts = [text for s in slices for text in s.job.texts[s.start : s.stop]]
            started = self._clock()
            results = self._encode_isolated(slices, texts)
            self._account(len(texts), self._clock() - started, results)
            try:
                self._loop.call_soon_threadsafe(self._deliver, slices, results)
            except RuntimeError:
                return  # the loop is closed: the server is shutting down

    def _encode_isolated(
        self, slices: list[_Slice], texts: list[str]
    ) -> list[EncodedBatch | BaseException]:
        """One result per slice; a failing call is retried per request so one bad input
        fails only its own request."""
        try:
            batch = self._encode(texts)
        except Exception as exc:
            self.stats.failed_calls += 1
            if len(slices) == 1:
                return [exc]
        else:
            results: list[EncodedBatch | BaseException] = []
            offset = 0
            for s in slices:
                size = s.stop - s.start
                end = offset + size
                results.append(
                    EncodedBatch(
                        batch.vectors[offset:end],
                        batch.token_counts[offset:end],
                        batch.truncated[offset:end],
                    )
                )
                offset = end
            return results
        isolated: list[EncodedBatch | BaseException] = []
        for s in slices:
            try:
                isolated.append(self._encode(s.job.texts[s.start : s.stop]))
            except Exception as exc:
                isolated.append(exc)
        return isolated

    def _account(
        self, count: int, elapsed: float, results: list[EncodedBatch | BaseException]
    ) -> None:
        stats = self.stats
        stats.model_calls += 1
        stats.texts += count
        stats.largest_batch = max(stats.largest_batch, count)
        stats.encode_seconds += elapsed
        stats.tokens += sum(sum(r.token_counts) for r in results if isinstance(r, EncodedBatch))
        if elapsed > 0:
            rate = count / elapsed
            previous = self._texts_per_second
            self._texts_per_second = (
                rate if previous == 0 else previous + _RATE_SMOOTHING * (rate - previous)
            )

    def _deliver(self, slices: list[_Slice], results: list[EncodedBatch | BaseException]) -> None:
        for s, result in zip(slices, results, strict=True):
            job = s.job
            if job.future.done():
                continue  # cancelled, or failed by an earlier slice
            if isinstance(result, BaseException):
                self._drop(job)
                job.future.set_exception(result)
                continue
            if job.vectors is None:
                job.vectors = np.empty((len(job.texts), result.vectors.shape[1]), dtype=np.float32)
                job.token_counts = [0] * len(job.texts)
                job.truncated = [False] * len(job.texts)
            job.vectors[s.start : s.stop] = result.vectors
            job.token_counts[s.start : s.stop] = result.token_counts
            job.truncated[s.start : s.stop] = result.truncated
            job.done += s.stop - s.start
            if job.done == len(job.texts):
                job.future.set_result(EncodedBatch(job.vectors, job.token_counts, job.truncated))

    def snapshot(self) -> dict[str, Any]:
        """Counters and settings as plain JSON values."""
        stats = self.stats
        return {
            "requests": stats.requests,
            "texts": stats.texts,
            "tokens": stats.tokens,
            "model_calls": stats.model_calls,
            "largest_batch": stats.largest_batch,
            "rejected": stats.rejected,
            "failed_calls": stats.failed_calls,
            "encode_seconds": round(stats.encode_seconds, 6),
            "queued_texts": self._queued,
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_s * 1000,
            "max_queue": self.max_queue,
        }
