"""Reading rows that older versions stored without today's checks: repaired, and said so."""

from __future__ import annotations

import json
import logging
from typing import Any

from sagellmd.errors import SpecError
from sagellmd.json_values import json_value_problems, repaired
from sagellmd.spec import CONTROL_RULES, ENGINE_SCHEMA, EngineSpec, ecma_match, parse_engine

log = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"


def _control_free(value: Any, schema: dict[str, Any]) -> Any:
    """`value` with each character its schema's pattern forbids replaced by U+FFFD."""
    if isinstance(value, str) and schema.get("pattern") in CONTROL_RULES:
        pattern = schema["pattern"]  # one character matches iff it is allowed
        return "".join(char if ecma_match(pattern, char) else _REPLACEMENT for char in value)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_control_free(item, schema["items"]) for item in value]
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        inner = schema["additionalProperties"]
        return {key: _control_free(item, inner) for key, item in value.items()}
    return value


def decode_stored_spec(text: str) -> tuple[EngineSpec, str | None]:
    """The spec of a stored row and, if the row had to be repaired, what was wrong with it.

    Older versions let lone surrogates, NaN and control characters in. Refusing such a
    row would take status down for good, so the engine is served from a repaired copy
    (U+FFFD for bad characters, null for bad numbers) and shown as invalid until it is
    declared again.
    """
    data = json.loads(text)  # Python's json reads the NaN and Infinity older versions wrote
    try:
        return parse_engine(data), None
    except SpecError as exc:
        problem = exc.message
    fixed = repaired(data)
    if isinstance(fixed, dict):
        properties = ENGINE_SCHEMA["properties"]
        fixed = {key: _control_free(value, properties.get(key, {})) for key, value in fixed.items()}
    name = data.get("name") if isinstance(data, dict) else None
    log.warning("engine=%r: stored spec is invalid (%s); serving a repaired copy", name, problem)
    return parse_engine(fixed), problem


def readable(value: Any) -> Any:
    """A stored document as an answer can carry it (repaired only if it has to be)."""
    return repaired(value) if json_value_problems(value) else value
