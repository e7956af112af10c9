"""What `sagellm run MODEL` declares, from the model's name alone; and the pure pieces of its
wait (which engines can take a request, when the wait has failed)."""

from __future__ import annotations

import io

import pytest

from sagellmd.cli.run_progress import EngineView, ProgressLine, engine_views, failure
from sagellmd.cli.run_target import AD_HOC_START, engine_name, is_embedding, is_gguf, run_target
from sagellmd.errors import BadInputError


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2-5-0-5b-instruct"),
        ("fake/model-1B", "model-1b"),
        (
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_k_m.gguf",
            "qwen2-5-0-5b-instruct-q4-k-m",
        ),
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "qwen2-5-0-5b-instruct-gguf-q4-k-m"),
        ("/models/tiny-llama.Q8_0.gguf", "tiny-llama-q8-0"),
        ("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"),
    ],
)
def test_the_engine_name_comes_from_the_model(model: str, name: str):
    assert engine_name(model) == name
    assert run_target(model).name == name


@pytest.mark.parametrize(
    ("model", "kind", "runtime"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", "llm", None),
        ("sentence-transformers/all-MiniLM-L6-v2", "embedding", None),
        ("BAAI/bge-small-en-v1.5", "embedding", None),
        ("intfloat/e5-base-v2", "embedding", None),
        ("nomic-ai/nomic-embed-text-v1.5", "embedding", None),
        ("fake/embedder", "embedding", None),
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_k_m.gguf", "llm", "llama-cpp"),
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "llm", "llama-cpp"),
        ("/models/tiny.gguf", "llm", "llama-cpp"),
    ],
)
def test_kind_and_runtime_are_guessed_from_the_name(model: str, kind: str, runtime: str | None):
    target = run_target(model)
    assert (target.kind, target.runtime) == (kind, runtime)
    expected = {"model": model, "kind": kind, **AD_HOC_START}
    if runtime:
        expected["runtime"] = runtime
    assert target.spec == expected


def test_options_override_the_guess():
    target = run_target("BAAI/bge-small-en-v1.5", kind="llm", runtime="custom", name="mine")
    assert (target.name, target.kind, target.runtime) == ("mine", "llm", "custom")
    assert target.spec["runtime"] == "custom" and target.spec["kind"] == "llm"
    assert target.describe().startswith("llm on custom")
    assert run_target("x/model.gguf", runtime="vllm").runtime == "vllm"


def test_not_every_colon_or_embed_looks_like_gguf_or_embedding():
    assert not is_gguf("Qwen/Qwen2.5-0.5B-Instruct")
    assert not is_gguf("org/repo:revision")
    assert not is_embedding("Qwen/Qwen2.5-0.5B-Instruct")
    assert not is_embedding("meta-llama/Llama-3.2-1B")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("  ",), "MODEL is empty"),
        (("a/b", "nope"), "--kind 'nope': must be one of llm, embedding"),
        (("a/b", None, None, "Bad_Name"), "--name 'Bad_Name' must be lowercase"),
        (("a/b", None, None, "gateway"), "reserved for sagellm's own gateway"),
        (("a/b", None, None, "x" * 64), "at most 63 chars; give --name NAME"),
    ],
)
def test_bad_input_names_the_option(args: tuple, fragment: str):
    with pytest.raises(BadInputError) as caught:
        run_target(*args)
    assert fragment in caught.value.message


def test_which_engines_can_take_a_request():
    status = {
        "engines": [
            {
                "id": "a",
                "state": "ready",
                "message": "healthy",
                "spec_hash": "1",
                "running_spec_hash": "1",
            },
            {"id": "b", "state": "ready", "spec_hash": "2", "running_spec_hash": "1"},
            {"id": "c", "state": "idle", "message": "on demand"},
            {"id": "d", "state": "starting", "message": "waiting for /health"},
        ]
    }
    views = {v.id: v for v in engine_views(status, ["a", "b", "c", "d", "e"])}
    assert [v.can_serve for v in views.values()] == [True, False, True, False, False]
    assert views["e"].state == "removed"
    assert views["d"].text() == "d: starting (waiting for /health)"


def test_the_wait_fails_only_when_every_engine_failed_or_left():
    backoff = EngineView("a", "backoff", "next start in 0.2s", True)
    gone = EngineView("b", "removed", "no longer declared", False)
    starting = EngineView("c", "starting", "", True)
    assert failure([backoff, starting], {}) is None
    assert failure([], {}) is None
    reason = failure([backoff, gone], {"a": "exit code 2: bad flag"})
    assert reason == (
        "a backoff: exit code 2: bad flag; b: removed; the daemon rolled back the change that"
        " declared it"
    )


def test_the_line_is_redrawn_on_a_terminal_and_printed_per_change_elsewhere():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain = io.StringIO()
    line = ProgressLine(plain)
    for text in ("a: starting", "a: starting", "a: ready"):
        line.show(text, 1.0)
    line.clear(close=True)
    line.show("late", 2.0)
    assert plain.getvalue() == "a: starting\na: ready\n"
    tty = Tty()
    line = ProgressLine(tty)
    line.show("a: starting", 3.2)
    line.clear(close=True)
    line.show("late", 4.0)
    assert tty.getvalue() == "\r\x1b[Ka: starting  3 s\r\x1b[K"
