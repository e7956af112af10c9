"""The status document is serialized once per state and reader, and never kept too long."""

from __future__ import annotations

import json

from sagellmd.api.status_document import StatusDocuments


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_build_per_state_and_reader():
    clock = Clock()
    documents = StatusDocuments(max_age_s=1.0, clock=clock)
    builds: list[str] = []

    def build(label: str):
        def make() -> dict:
            builds.append(label)
            return {"label": label, "builds": len(builds)}

        return make

    first = documents.get((1, 5), False, build("a"))
    assert documents.get((1, 5), False, build("b")) == first  # same state: the same bytes
    assert json.loads(first) == {"label": "a", "builds": 1}
    with_token = documents.get((1, 5), True, build("secret"))
    assert json.loads(with_token)["label"] == "secret"  # each reader its own document
    assert json.loads(documents.get((2, 5), False, build("c")))["label"] == "c"  # notified
    assert json.loads(documents.get((2, 6), False, build("d")))["label"] == "d"  # a pass
    assert builds == ["a", "secret", "c", "d"]


def test_a_document_older_than_its_max_age_is_built_again():
    clock = Clock()
    documents = StatusDocuments(max_age_s=1.0, clock=clock)
    documents.get((1, 1), False, lambda: {"n": 1})
    clock.now += 0.9
    assert json.loads(documents.get((1, 1), False, lambda: {"n": 2})) == {"n": 1}
    clock.now += 0.2
    assert json.loads(documents.get((1, 1), False, lambda: {"n": 3})) == {"n": 3}
