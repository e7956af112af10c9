"""The JSON Schemas of an engine spec and a preset document, and the patterns inside them."""

from __future__ import annotations

from typing import Any

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}
# No control characters (C0, DEL, C1) where they make no sense: a model id, a label.
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
# Arguments, environment values and descriptions may hold tabs and newlines (a chat
# template, a PEM key); NUL can never reach exec and the other C0 controls are mistakes.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# A routable name (an alias) is one word a client types as `model`: no spaces, no controls.
ALIAS_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f]+$"

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _any_case(word: str) -> str:
    # JSON Schema patterns take no flags: "jan", "Jan" and "JAN" are all month names.
    return "".join(f"[{char.lower()}{char.upper()}]" for char in word)


def _cron_field(value: str, step: str, names: tuple[str, ...] = ()) -> str:
    atom = "|".join([value, *map(_any_case, names)])
    # *, */n, a, a-b, a-b/n, and lists of them: cron(5)'s syntax.
    item = f"(?:\\*(?:/(?:{step}))?|(?:{atom})(?:-(?:{atom})(?:/(?:{step}))?)?)"
    return f"{item}(?:,{item})*"


_MINUTE = _cron_field("[0-5]?[0-9]", "[1-9]|[1-5][0-9]")
_CRON_FIELDS = [
    _MINUTE,
    _cron_field("[01]?[0-9]|2[0-3]", "[1-9]|1[0-9]|2[0-3]"),
    _cron_field("0?[1-9]|[12][0-9]|3[01]", "[1-9]|[12][0-9]|3[01]"),
    _cron_field("0?[1-9]|1[0-2]", "[1-9]|1[0-2]", tuple(MONTH_NAMES)),
    _cron_field("0?[0-7]", "[1-7]", tuple(WEEKDAY_NAMES)),
]
# What a regular expression can say of a cron expression (optional seconds first); the
# validator still checks what it cannot (a range's order, a step larger than its range).
CRON_PATTERN = (
    "^\\s*(?:(?:" + _MINUTE + ")\\s+)?" + "\\s+".join(f"(?:{f})" for f in _CRON_FIELDS) + "\\s*$"
)
KINDS = ("llm", "embedding")
RESTART_POLICIES = ("always", "on-failure", "never")
START_POLICIES = ("always", "on-demand")
IDLE_ACTIONS = ("stop", "sleep")

ENGINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "model"],
    "properties": {
        "name": NAME_SCHEMA,
        "kind": {"enum": list(KINDS)},
        "model": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1024,
            "pattern": NO_CONTROL_PATTERN,
        },
        "runtime": {"type": "string", "pattern": r"^[A-Za-z0-9][-_.A-Za-z0-9]*$", "maxLength": 63},
        "tensor_parallel": {"type": "integer", "minimum": 1, "maximum": 64},
        "pipeline_parallel": {"type": "integer", "minimum": 1, "maximum": 64},
        # Cluster nodes a vLLM engine spans through Ray (docs/multi-node.md).
        "nodes": {"type": ["integer", "null"], "minimum": 1, "maximum": 64},
        "port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535},
        "label": {"type": ["string", "null"], "maxLength": 256, "pattern": NO_CONTROL_PATTERN},
        "aliases": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": ALIAS_PATTERN},
            "uniqueItems": True,
            "maxItems": 64,
        },
        "max_concurrent_requests": {"type": "integer", "minimum": 1, "maximum": 65536},
        "use_gpu": {"type": ["boolean", "null"]},
        "gpu_memory_gb": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 4096},
        "extra_args": {
            "type": "array",
            "items": {"type": "string", "pattern": TEXT_PATTERN},
            "maxItems": 256,
        },
        "env": {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": "string", "pattern": TEXT_PATTERN},
        },
        "metadata": {"type": "object"},
        "restart": {"enum": list(RESTART_POLICIES)},
        "startup_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "restart_schedule": {"type": ["string", "null"], "pattern": CRON_PATTERN, "maxLength": 128},
        "start": {"enum": list(START_POLICIES)},
        "idle_s": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 31536000},
        "idle_action": {"enum": list(IDLE_ACTIONS)},
        # Checked field by field by disaggregation.parse_disaggregated, whose messages say
        # the fix; the schema only lets the block through.
        "disaggregated": {"type": ["object", "null"]},
    },
}

PRESET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "name", "engines"],
    "properties": {
        "version": {"const": 1},
        "name": NAME_SCHEMA,
        "description": {"type": "string", "maxLength": 4096, "pattern": TEXT_PATTERN},
        "engines": {"type": "array", "minItems": 1, "maxItems": 64, "items": ENGINE_SCHEMA},
    },
}
