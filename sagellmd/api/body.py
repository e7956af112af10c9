"""Reading request bodies and query parameters: limits, strict JSON, errors that say what
is wrong."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request

from sagellmd.errors import BadInputError, PayloadTooLargeError
from sagellmd.json_values import MAX_JSON_DEPTH, json_value_problems, loads
from sagellmd.schemas.requests import MAX_INTEGER, QUERY_PARAMETERS

MAX_BODY_BYTES = 1024 * 1024

# ASCII only: int() and float() also take "١٢", "1_000", " 5" and "nan".
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")

NO_BODY: Any = object()


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON: UTF-8, finite numbers, no lone surrogates, at most MAX_JSON_DEPTH deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"body: not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start});"
            " send JSON encoded as UTF-8"
        ) from None
    try:
        data = loads(text)
    except RecursionError:
        raise BadInputError(f"body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"body: not valid JSON: {exc}") from exc
    except ValueError:
        # Python refuses to convert integers of more than 4300 digits (CVE-2020-10735).
        raise BadInputError("body: not valid JSON: a number has more than 4300 digits") from None
    problems = json_value_problems(data, "body")
    if problems:
        raise BadInputError("; ".join(problems), {"errors": problems})
    return data


async def read_json(request: Request, required: bool = True) -> Any:
    """The JSON body, or NO_BODY when it is empty and not required (JSON null is None)."""
    declared = request.headers.get("content-length")
    if declared and _INTEGER.fullmatch(declared) and int(declared) > MAX_BODY_BYTES:
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
    return parse_json_body(raw)


def check_query_not_repeated(request: Request) -> None:
    """`?wait=1&wait=2` has no single meaning; refuse it rather than pick one."""
    seen: dict[str, int] = {}
    for key, _ in request.query_params.multi_items():
        seen[key] = seen.get(key, 0) + 1
    repeated = [key for key, count in seen.items() if count > 1]
    if repeated:
        key = repeated[0]
        raise BadInputError(
            f"query parameter {key}: given {seen[key]} times; give it once",
            {"parameter": key},
        )


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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
    pattern = _INTEGER if integer else _NUMBER
    # The length cap keeps int() from its 4300-digit error; 64 characters is past any bound.
    well_formed = len(raw) <= 64 and pattern.fullmatch(raw) is not None
    value = (int(raw) if integer else float(raw)) if well_formed else None
    if value is None or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise BadInputError(f"query parameter {name}: must be {kind}, got {raw!r}")
    upper = maximum if maximum is not None else (MAX_INTEGER if integer else None)
    if value < minimum or (upper is not None and value > upper):
        bound = f" and <= {_bound(upper)}" if upper is not None else ""
        raise BadInputError(
            f"query parameter {name}: must be >= {_bound(minimum)}{bound}, got {raw!r}"
        )
    return value


def query_parameter(request: Request, name: str, default: float | None) -> float | None:
    """A numeric query parameter, bounded as its schema in QUERY_PARAMETERS says."""
    schema = QUERY_PARAMETERS[name]
    return query_number(
        request,
        name,
        default,
        schema.get("minimum", 0),
        schema.get("maximum"),
        integer=schema["type"] == "integer",
    )


def query_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise BadInputError(f"query parameter {name}: must be true or false, got {raw!r}")


def path_integer(request: Request, name: str, what: str) -> int:
    """A path segment that must be a non-negative integer a SQLite row id can hold."""
    raw = request.path_params[name]
    if (
        len(raw) > 64
        or not _INTEGER.fullmatch(raw)
        or raw.startswith("-")
        or int(raw) > MAX_INTEGER
    ):
        raise BadInputError(f"{name}: must be {what} (0 to {MAX_INTEGER}), got {raw!r:.40}")
    return int(raw)
