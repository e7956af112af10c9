"""Validating against these schemas with ECMA-262 pattern semantics, as OpenAPI clients do."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema


def ecma_match(pattern: str, text: str) -> bool:
    """A JSON Schema (ECMA-262) pattern's meaning: a final `$` is the end of the text.

    Python's `$` also matches before a trailing newline, so "chat\n" would pass as a name.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, text) is not None


def _pattern(
    validator: Any, pattern: str, instance: Any, _schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not ecma_match(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r:.60} does not match {pattern!r}")


Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})


def is_valid(schema: dict[str, Any], value: Any) -> bool:
    """Whether `value` meets `schema` (a schema without references to other documents)."""
    return bool(Validator(schema).is_valid(value))
