"""Reading request bodies: size limit and JSON, with errors that say what is wrong."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from sagellmd.errors import BadInputError, PayloadTooLargeError

MAX_BODY_BYTES = 1024 * 1024


NO_BODY: Any = object()


async def read_json(request: Request, required: bool = True) -> Any:
    """The JSON body, or NO_BODY when it is empty and not required (JSON null is None)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"body: larger than the limit of {MAX_BODY_BYTES} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"body: larger than the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if required:
            raise BadInputError("body: a JSON object is required")
        return NO_BODY
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"body: not valid JSON: {exc}") from exc


def query_number(
    request: Request,
    name: str,
    default: float | None,
    minimum: float = 0,
    maximum: float | None = None,
    integer: bool = True,
) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value: float = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise BadInputError(f"query parameter {name}: must be {kind}, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f" and <= {maximum:g}" if maximum is not None else ""
        raise BadInputError(f"query parameter {name}: must be >= {minimum:g}{bound}, got {raw!r}")
    return value


def query_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise BadInputError(f"query parameter {name}: must be true or false, got {raw!r}")
