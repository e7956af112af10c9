"""Owns the tests of sagellmd/json_values.py: what a JSON value from outside may hold."""

from __future__ import annotations

import json

import pytest

from sagellmd.json_values import (
    MAX_JSON_DEPTH,
    NonFiniteNumber,
    json_value_problems,
    loads,
    strict_dumps,
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"a": NaN}', "a: NaN is not a number JSON allows"),
        ('{"a": [1, Infinity]}', "a[1]: Infinity is not a number JSON allows"),
        ('{"a": -Infinity}', "a: -Infinity"),
        ('{"a": 1e400}', "a: 1e400"),
        ('{"a": "\\ud800"}', "a: not valid Unicode (a lone surrogate \\ud800)"),
        ('{"\\udc00": 1}', "(document): a key is not valid Unicode"),
        ('{"odd key": {"b": "\\udc00"}}', '["odd key"].b: not valid Unicode'),
    ],
)
def test_problems_name_the_path(text, problem):
    problems = json_value_problems(loads(text))
    assert problems and problems[0].startswith(problem), problems
    problems[0].encode("ascii")


def test_good_values_have_no_problems():
    value = loads('{"a": [1, 2.5, -0.0, 1e300, true, null, "caf\\u00e9 \\ud83d\\ude00"]}')
    assert json_value_problems(value) == []


def test_depth_is_bounded_iteratively():
    value: object = 1
    for _ in range(100000):
        value = [value]
    assert json_value_problems(value, "body") == [
        f"body: nested deeper than {MAX_JSON_DEPTH} levels"
    ]


def test_loads_marks_non_finite_numbers():
    assert loads("[NaN, 1e999, 1.5]") == [
        NonFiniteNumber("NaN"),
        NonFiniteNumber("1e999"),
        1.5,
    ]


def test_strict_dumps_refuses_what_no_answer_could_carry():
    assert json.loads(strict_dumps({"b": 1, "a": "x"})) == {"a": "x", "b": 1}
    with pytest.raises(ValueError, match="a: nan"):
        strict_dumps({"a": float("nan")})
    with pytest.raises(ValueError, match="lone surrogate"):
        strict_dumps({"a": "\ud800"})
