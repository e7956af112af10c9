"""Reading request bodies and query parameters: limits, strict JSON, errors that say what
is wrong."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml
from starlette.requests import Request

from sagellmd.errors import BadInputError, PayloadTooLargeError
from sagellmd.json_values import MAX_JSON_DEPTH, json_value_problems, loads
from sagellmd.schemas.requests import MAX_INTEGER, QUERY_PARAMETERS

MAX_BODY_BYTES = 1024 * 1024

# ASCII only: int() and float() also take "١٢", "1_000", " 5" and "nan".
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")

NO_BODY: Any = object()
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


class _BodyLoader(yaml.SafeLoader):
    """Safe YAML without aliases: `*a` repeats a node by reference, and a few lines of them
    (a "billion laughs") make a document far too large to check or store."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in a request body", event.start_mark
            )
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call]


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"body: not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start});"
            f" send {what} encoded as UTF-8"
        ) from None


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON: UTF-8, finite numbers, no lone surrogates, at most MAX_JSON_DEPTH deep."""
    text = _utf8(raw, "JSON")
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


def parse_yaml_body(raw: bytes) -> Any:
    """One YAML document held to what a JSON body may hold (string keys, finite numbers, no
    dates, MAX_JSON_DEPTH deep), so the checks after it are those of a JSON body."""
    text = _utf8(raw, "YAML")
    try:
        data = yaml.load(text, Loader=_BodyLoader)  # a SafeLoader: plain data only
    except RecursionError:
        raise BadInputError(f"body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "a syntax error"
        raise BadInputError(
            f"body: not valid YAML{where}: {problem}",
            {"line": mark.line + 1, "column": mark.column + 1} if mark else {},
        ) from None
    except yaml.YAMLError as exc:
        raise BadInputError(f"body: not valid YAML: {exc}") from None
    problems = json_value_problems(data, "body")
    if problems:
        raise BadInputError("; ".join(problems), {"errors": problems})
    return data


def is_yaml(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type in YAML_TYPES


async def read_json(request: Request, required: bool = True, yaml_ok: bool = False) -> Any:
    """The JSON body, or NO_BODY when it is empty and not required (JSON null is None);
    with `yaml_ok`, a YAML one when the Content-Type says YAML."""
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
    if yaml_ok and is_yaml(request):
        return parse_yaml_body(raw)
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
