"""The embedding engine's HTTP API: OpenAI-shaped /v1/embeddings, /v1/models, /health, /stats."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sagellmd.engines.embedding_batcher import DynamicBatcher, QueueFullError
from sagellmd.engines.embedding_model import EncodedBatch
from sagellmd.errors import BadInputError, PayloadTooLargeError, SagellmError
from sagellmd.models.packages import package_for

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000
MAX_BODY_BYTES = 16 * 1024 * 1024
ALLOWED_FIELDS = ("input", "model", "encoding_format", "dimensions", "user")
ENCODING_FORMATS = ("float", "base64")
TRUNCATED_HEADER = "X-Truncated-Inputs"
# Bodies and responses past these sizes are parsed and rendered off the event loop, where
# they cannot stall other requests; smaller ones cost less inline than the thread hop.
_INLINE_BODY_BYTES = 64 * 1024
_INLINE_RENDER_VECTORS = 16


class EngineNotReadyError(SagellmError):
    code = "loading"
    http_status = 503


class EngineState(Protocol):
    """What the API needs to know about the engine behind it."""

    model_id: str
    error: str | None
    dimension: int
    normalized: bool
    batcher: DynamicBatcher | None


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


def served_names(served_model: str) -> tuple[str, ...]:
    """The served id first, then the other names of the same model (docs/models.md aliases)."""
    package = package_for(served_model)
    others = [name for name in package.names if name != served_model] if package else []
    return (served_model, *others)


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
        names = served_names(served_model)
        if model not in names:
            shown = " (also answering to " + ", ".join(map(repr, names[1:])) + ")"
            raise BadInputError(
                f"'model' is {model!r} but this engine serves {served_model!r}"
                + (shown if len(names) > 1 else "")
            )

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


def _embedding_json(row: np.ndarray, encoding_format: str) -> str:
    if encoding_format == "base64":
        return '"' + base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") + '"'
    values = row.tolist()
    if not np.isfinite(row).all():
        return json.dumps(values)  # "g" would print nan and inf, which no JSON parser reads
    # Nine significant digits round-trip any float32 and print half as many characters as
    # float64 repr, in half the time: most of the CPU a single-text request costs outside the
    # model goes here.
    return "[" + ",".join([f"{value:.9g}" for value in values]) + "]"


def render_embeddings(
    encoded: EncodedBatch, request: EmbeddingRequest, model_id: str, normalized: bool
) -> bytes:
    """The OpenAI-shaped response body, plus ``truncated``: indexes of inputs cut to fit."""
    vectors = encoded.vectors
    if request.dimensions is not None and request.dimensions < vectors.shape[1]:
        vectors = vectors[:, : request.dimensions]
        if normalized:
            # A prefix of a unit vector is not a unit vector; clients expect dot == cosine.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
    tokens = sum(encoded.token_counts)
    rest = {
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "truncated": [i for i, cut in enumerate(encoded.truncated) if cut],
    }
    data = ",".join(
        f'{{"object":"embedding","index":{index},'
        f'"embedding":{_embedding_json(row, request.encoding_format)}}}'
        for index, row in enumerate(vectors)
    )
    tail = json.dumps(rest, separators=(",", ":"))
    return f'{{"object":"list","data":[{data}],{tail[1:]}'.encode()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    message = f"request body is larger than {limit} bytes; send fewer or shorter inputs"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(message)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(message)
        chunks.append(chunk)
    return b"".join(chunks)


def _error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        headers=headers,
    )


def build_app(engine: EngineState) -> Starlette:
    """The HTTP API over ``engine``; usable without a running model for tests of the shape."""

    async def health(request: Request) -> JSONResponse:
        if engine.batcher is not None:
            return JSONResponse({"status": "ok"})
        if engine.error is not None:
            return JSONResponse({"status": "failed", "message": engine.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def models(request: Request) -> JSONResponse:
        card = {"id": engine.model_id, "object": "model", "owned_by": "sagellm"}
        return JSONResponse({"object": "list", "data": [card]})

    async def stats(request: Request) -> JSONResponse:
        if engine.batcher is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", **engine.batcher.snapshot()})

    async def embeddings(request: Request) -> Response:
        batcher = engine.batcher
        if batcher is None:
            raise EngineNotReadyError(
                f"model {engine.model_id!r} is still loading; retry when GET /health returns 200"
            )
        with batcher.incoming() as ticket:
            raw = await read_body(request, MAX_BODY_BYTES)
            args = (raw, engine.model_id, engine.dimension)
            if len(raw) > _INLINE_BODY_BYTES:
                parsed = await run_in_threadpool(parse_request, *args)
            else:
                parsed = parse_request(*args)
            encoded = await batcher.submit(parsed.texts, ticket)
        render = (encoded, parsed, engine.model_id, engine.normalized)
        if len(parsed.texts) > _INLINE_RENDER_VECTORS:
            body = await run_in_threadpool(render_embeddings, *render)
        else:
            body = render_embeddings(*render)
        truncated = sum(encoded.truncated)
        headers = {TRUNCATED_HEADER: str(truncated)} if truncated else None
        return Response(body, media_type="application/json", headers=headers)

    async def sagellm_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SagellmError)
        headers = None
        if isinstance(exc, QueueFullError):
            headers = {"Retry-After": str(exc.retry_after_s)}
        elif isinstance(exc, EngineNotReadyError):
            headers = {"Retry-After": "1"}
        return _error_response(exc.http_status, exc.code, exc.message, exc.details, headers)

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
            Route("/stats", stats, methods=["GET"]),
        ],
        exception_handlers={
            SagellmError: sagellm_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
