"""What a JSON value from outside may hold: valid Unicode, finite numbers, bounded nesting."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

# Deeper than any spec needs, far below the ~1000 frames where recursive code (json,
# dataclasses.asdict) raises RecursionError.
MAX_JSON_DEPTH = 64
# A value with more problems is not worth listing them all.
MAX_PROBLEMS = 10

_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class NonFiniteNumber:
    """A number literal JSON does not allow (NaN, Infinity) or that overflows a double."""

    text: str


def _parse_float(text: str) -> float | NonFiniteNumber:
    value = float(text)
    return value if math.isfinite(value) else NonFiniteNumber(text)


def loads(text: str) -> Any:
    """json.loads, but NaN, Infinity and 1e400 come back as NonFiniteNumber to be reported."""
    return json.loads(text, parse_constant=NonFiniteNumber, parse_float=_parse_float)


def _key_path(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"  # ASCII-escaped: the message itself must be sendable


def _surrogate_problem(where: str, text: str, what: str) -> str | None:
    found = _SURROGATE.search(text)
    if found is None:
        return None
    escaped = json.dumps(found.group())[1:-1]
    return f"{where}: {what}not valid Unicode (a lone surrogate {escaped}); send UTF-8 text"


def _scalar_problem(where: str, value: Any) -> str | None:
    if isinstance(value, str):
        return _surrogate_problem(where, value, "")
    if isinstance(value, NonFiniteNumber):
        return f"{where}: {value.text} is not a number JSON allows; numbers must be finite"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}: {value!r} is not a number JSON allows; numbers must be finite"
    if value is None or isinstance(value, bool | int | float):
        return None
    return (
        f"{where}: must be a JSON value (string, number, true/false, null, list or mapping),"
        f" got a {type(value).__name__}"
    )


def json_value_problems(value: Any, root: str = "") -> list[str]:
    """Everything in `value` that no JSON answer could carry back, with the path of each.

    `root` names the value itself in messages ("" for a document whose fields are named
    by their own path, "body" for a request body). Iterative, so any depth is safe.
    """
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack and len(problems) < MAX_PROBLEMS:
        item, path, depth = stack.pop()
        where = path or "(document)"
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_JSON_DEPTH:
                top = re.split(r"[.\[]", path, maxsplit=1)[0] if path else ""
                problems.append(f"{top or where}: nested deeper than {MAX_JSON_DEPTH} levels")
                continue
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        problems.append(f"{where}: keys must be strings, got {key!r:.40}")
                        continue
                    bad_key = _surrogate_problem(where, key, "a key is ")
                    if bad_key:
                        problems.append(bad_key)
                        continue
                    children.append((child, _key_path(path, key), depth + 1))
            else:
                children = [(child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item)]
            stack.extend(reversed(children))
            continue
        problem = _scalar_problem(where, item)
        if problem:
            problems.append(problem)
    return problems


def repaired(value: Any, depth: int = 0) -> Any:
    """A copy that JSON can carry: lone surrogates -> U+FFFD, bad numbers and values too
    deep or of no JSON type -> null. For rows older versions stored without checking."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict | list | tuple) and depth >= MAX_JSON_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            repaired(key): repaired(child, depth + 1)
            for key, child in value.items()
            if isinstance(key, str)
        }
    if isinstance(value, list | tuple):
        return [repaired(child, depth + 1) for child in value]
    if _scalar_problem("", value) is not None:
        return None
    return value


def strict_dumps(value: Any) -> str:
    """The JSON text the store keeps; raises ValueError for what no answer could carry."""
    problems = json_value_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    return json.dumps(value, sort_keys=True, allow_nan=False)
