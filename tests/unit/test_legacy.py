"""Owns the tests of sagellmd/store/legacy.py: rows older versions stored are repaired."""

from __future__ import annotations

import json

from sagellmd.spec import parse_engine
from sagellmd.store.legacy import decode_stored_spec, readable


def stored(**fields: object) -> str:
    """The text an older version stored: json.dumps escapes surrogates, writes NaN bare."""
    return json.dumps({"name": "chat", "model": "m", **fields}, sort_keys=True)


def test_a_valid_row_is_returned_as_it_is():
    spec, problem = decode_stored_spec(stored(label="café", metadata={"a": [1, 2.5]}))
    assert problem is None
    assert spec == parse_engine(
        {"name": "chat", "model": "m", "label": "café", "metadata": {"a": [1, 2.5]}}
    )


def test_surrogates_nan_and_control_characters_are_repaired_and_named():
    text = stored(
        label="a\ud800b",
        metadata={"x": float("nan"), "y": [float("inf")], "ok": "keep\nme"},
        model="fake/a\x00b",
        env={"A": "x\x1b", "B": "two\nlines"},
        extra_args=["--x", "\x07"],
    )
    spec, problem = decode_stored_spec(text)
    assert problem is not None
    for field in ("label", "metadata.x", "metadata.y[0]", "model", "env.A", "extra_args[1]"):
        assert field in problem, (field, problem)
    assert spec.label == "a\ufffdb"
    assert spec.model == "fake/a\ufffdb"
    assert dict(spec.metadata) == {"x": None, "y": [None], "ok": "keep\nme"}
    assert dict(spec.env) == {"A": "x\ufffd", "B": "two\nlines"}
    assert spec.extra_args == ("--x", "\ufffd")
    # What status shows of it can be sent.
    json.dumps(spec.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
    problem.encode("ascii")


def test_a_newline_in_a_name_like_field_is_repaired_too():
    spec, problem = decode_stored_spec(stored(label="two\nlines"))
    assert problem and spec.label == "two\ufffdlines"


def test_readable_leaves_good_documents_alone_and_repairs_bad_ones():
    good = {"engines": [{"spec": {"label": "x"}}]}
    assert readable(good) is good
    assert readable({"a": float("nan"), "b": "\udc00"}) == {"a": None, "b": "\ufffd"}
