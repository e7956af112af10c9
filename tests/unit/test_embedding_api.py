"""The embedding engine's request checks: which `model` names an engine answers to."""

from __future__ import annotations

import json

import pytest

from sagellmd.engines.embedding_api import parse_request
from sagellmd.errors import BadInputError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _body(model: str) -> bytes:
    return json.dumps({"input": "hello", "model": model}).encode()


@pytest.mark.parametrize(
    ("served", "asked"),
    [
        (MINILM, MINILM),
        (MINILM, "all-MiniLM-L6-v2"),  # the alias docs/models.md gives
        ("all-MiniLM-L6-v2", MINILM),
        ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
    ],
)
def test_an_engine_answers_to_its_model_and_its_aliases(served: str, asked: str):
    assert parse_request(_body(asked), served, 384).texts == ["hello"]


def test_another_model_is_refused_naming_what_is_served():
    with pytest.raises(BadInputError) as raised:
        parse_request(_body("text-embedding-3-small"), MINILM, 384)
    message = str(raised.value)
    assert "'model' is 'text-embedding-3-small'" in message
    assert MINILM in message and "all-MiniLM-L6-v2" in message
