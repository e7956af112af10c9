"""YAML request bodies: held to what a JSON body may hold, syntax errors with line and column."""

from __future__ import annotations

import pytest

from sagellmd.api.body import parse_yaml_body
from sagellmd.errors import BadInputError


def message(raw: bytes) -> str:
    with pytest.raises(BadInputError) as caught:
        parse_yaml_body(raw)
    return caught.value.message


def test_a_document_parses_to_plain_data():
    assert parse_yaml_body(b"name: p\nengines:\n  - model: m\n    port: 8001\n") == {
        "name": "p",
        "engines": [{"model": "m", "port": 8001}],
    }


def test_a_syntax_error_names_line_and_column():
    text = message(b"name: p\nengines:\n  - model: [unclosed\n")
    assert text.startswith("body: not valid YAML at line ")
    assert ", column " in text
    bad_indent = message(b"name: p\n  x: 1\n")
    assert "line 2, column 4" in bad_indent


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a: .inf\n", "numbers must be finite"),
        (b"a: .nan\n", "numbers must be finite"),
        (b"1: x\n", "keys must be strings"),
        (b"when: 2024-01-01\n", "must be a JSON value"),
        (b"a: !!binary aGk=\n", "must be a JSON value"),
        (b"a: &x [1]\nb: *x\n", "aliases (*name) are not accepted"),
        (b"a: 1\n---\nb: 2\n", "not valid YAML"),
        (b"a: !!python/object:os.system x\n", "not valid YAML"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"a: " + b"[" * 200 + b"]" * 200 + b"\n", "nested deeper than 64 levels"),
    ],
)
def test_what_json_could_not_carry_is_refused(raw: bytes, expected: str):
    assert expected in message(raw)
