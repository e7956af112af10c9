"""The built-in embedding engine's process: flags, model loading in the background, serving.

Run as ``python -m sagellmd.engines.embedding --model M --port P``. The socket is bound before
the model loads so the daemon can tell "loading" (``GET /health`` is 503) from "not started";
if loading fails the process prints one line saying why on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import uvicorn

from sagellmd.engines.embedding_api import MAX_INPUT_CHARS, MAX_INPUTS, build_app
from sagellmd.engines.embedding_batcher import DynamicBatcher
from sagellmd.engines.embedding_model import (
    ModelLoadError,
    TextEncoder,
    load_model,
    resolve_model_path,
)

__all__ = ["MAX_INPUTS", "MAX_INPUT_CHARS", "EmbeddingEngine", "main", "resolve_model_path"]

_LOG_PREFIX = "sagellm embedding engine:"


def _log(message: str) -> None:
    print(f"{_LOG_PREFIX} {message}", file=sys.stderr, flush=True)


class EmbeddingEngine:
    """The model's loading state and, once it is ready, the batcher that feeds it."""

    def __init__(
        self,
        model_id: str,
        device: str,
        normalize: bool,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        threads: int | None = None,
    ) -> None:
        self.model_id = model_id
        self.device = device
        self.normalized = normalize
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_queue = max_queue
        self.threads = threads
        self.dimension = 0
        self.error: str | None = None
        self.batcher: DynamicBatcher | None = None

    def load(self, loop: asyncio.AbstractEventLoop) -> None:
        """Load the model and start batching; on failure set ``error`` (runs in a thread)."""
        started = time.monotonic()
        try:
            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)
            model = load_model(self.model_id, self.device)
            encoder = TextEncoder(model, self.normalized)
        except ModelLoadError as exc:
            self.error = str(exc)
            return
        except Exception as exc:
            self.error = f"model {self.model_id!r} could not be loaded: {type(exc).__name__}: {exc}"
            return
        self.dimension = encoder.dimension
        batcher = DynamicBatcher(
            encoder.encode, self.max_batch_size, self.max_wait_ms / 1000, self.max_queue
        )
        batcher.start(loop)
        # Assigned last: handlers treat a batcher as "everything above is set".
        self.batcher = batcher
        _log(
            f"model {self.model_id!r} ready on {model.device} ({encoder.dimension} dimensions, "
            f"max {encoder.max_tokens} tokens per input) after {time.monotonic() - started:.1f}s"
        )

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


class _EngineServer(uvicorn.Server):
    """uvicorn that starts loading once the socket is bound and exits if loading fails."""

    def __init__(self, config: uvicorn.Config, engine: EmbeddingEngine) -> None:
        super().__init__(config)
        self.engine = engine

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        # Started only now so importing torch cannot delay the bind that /health needs.
        # Daemon: a SIGTERM during a slow load must not wait for the load to finish.
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._load, args=(loop,), name="embedding-load", daemon=True
        ).start()

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        self.engine.load(loop)
        if self.engine.error is not None:
            # One line, last in the log: what a supervisor tailing the log shows as the reason.
            _log("failed: " + " ".join(self.engine.error.split()))
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            self.engine.close()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal after its graceful shutdown; turning it into SystemExit
    # here makes a requested stop exit 0 (or 130 for Ctrl-C) instead of dying by signal.
    raise SystemExit(0 if signum == signal.SIGTERM else 128 + signum)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def _wait_ms(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 1000")
    return number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sagellmd.engines.embedding",
        description="Serve one sentence-transformers model over an OpenAI-style embeddings API.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="local model directory or Hugging Face hub id (all-MiniLM-L6-v2 may be bundled)",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda uses the first GPU in CUDA_VISIBLE_DEVICES (default: cpu)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=64,
        help="most texts per model call, from one request or gathered from several "
        "(default: 64); larger requests are split",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=_wait_ms,
        default=5.0,
        help="how long an idle model waits for requests already arriving to fill a batch "
        "(default: 5)",
    )
    parser.add_argument(
        "--max-queue",
        type=_positive_int,
        default=4096,
        help="most texts waiting for the model; past it requests get 503 with Retry-After "
        "(default: 4096)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads torch may use for the model (default: torch's choice, one per core)",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="unit-length vectors (default); --no-normalize returns the pooled vectors as they "
        "are, skipping the model's own Normalize layer",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch is imported, which is when OpenMP reads it. OpenMP's default spins threads
    # at every barrier; a server that alternates between HTTP work and model calls, on a box
    # shared with other engines, loses whole time slices to that: with 2 cores and other load
    # it was 2-5x slower than with waiting threads asleep. An explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    engine = EmbeddingEngine(
        args.model,
        args.device,
        args.normalize,
        args.max_batch_size,
        args.max_wait_ms,
        args.max_queue,
        args.threads,
    )
    config = uvicorn.Config(
        build_app(engine),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # A stop must not hang for as long as a 2048-input request takes.
        timeout_graceful_shutdown=5,
    )
    server = _EngineServer(config, engine)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    _log(
        f"starting on http://{args.host}:{args.port}; model {args.model!r} loads in the background"
    )
    try:
        server.run()
    except SystemExit as exc:
        # Raised by _exit_on_signal, or by uvicorn when it cannot bind the port.
        return exc.code if isinstance(exc.code, int) else 1
    return 1 if engine.error is not None else 0


if __name__ == "__main__":
    exit_code = main()
    # uvicorn has drained the connections by now and nothing here needs finalizers, while
    # tearing down torch takes seconds and a loader thread still importing it can stall
    # interpreter shutdown further; a stop must be prompt.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
