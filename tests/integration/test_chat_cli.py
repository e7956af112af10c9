"""`sagellm chat` and `sagellm embed` against a real daemon, its gateway and stand-in engines:
an interactive conversation on a pseudo-terminal, piped and one-shot use, exit codes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Daemon, base_config, fake_preset, free_port
from tests.integration.terminal import CLI, PtyProcess, wait_until

MODEL = "fake/model-1B"
EMBEDDER = "fake/embedder"
# A long, slow stream: an answer still running when the test presses Ctrl-C.
SLOW_STREAM = {"FAKE_VLLM_STREAM_TOKENS": "400", "FAKE_VLLM_TOKEN_INTERVAL_MS": "25"}


def ready_daemon(make_daemon: Any, *engines: dict[str, Any]) -> Daemon:
    """A daemon with its gateway and a preset `p` of `engines`, routable through the gateway."""
    daemon = make_daemon(gateway={"enabled": True, "port": free_port()})
    preset = fake_preset("p", *engines)
    answer = daemon.put("/v1/presets/p", preset)
    assert answer.status_code in (200, 201), answer.text
    gateway = f"http://127.0.0.1:{daemon.config['gateway']['port']}"

    def routable() -> bool:
        try:
            models = httpx.get(f"{gateway}/v1/models", timeout=5).json()["data"]
        except (httpx.TransportError, ValueError, KeyError):
            return False
        ready = {e["id"] for m in models for e in m["engines"] if e["state"] == "ready"}
        return {f"p.{engine['name']}" for engine in engines} <= ready

    daemon.wait_for(routable, 30, "the preset's engines routable through the gateway")
    return daemon


@pytest.fixture(scope="module")
def chat_and_embed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One ready daemon, gateway and chat+embedding preset for the tests that only ask it
    (a daemon, its gateway and two engines are seconds of CPU to start)."""
    home = tmp_path_factory.mktemp("chat-and-embed") / "home"
    daemon = Daemon(home, base_config(gateway={"enabled": True, "port": free_port()}))

    def started(**_: Any) -> Daemon:
        daemon.start()
        return daemon

    try:
        yield ready_daemon(
            started,
            {"name": "chat"},
            {"name": "embed", "kind": "embedding", "runtime": "vllm", "model": EMBEDDER},
        )
    finally:
        daemon.cleanup()


def prompts(text: str) -> int:
    return text.count(">>> ")


def test_an_interactive_chat_keeps_the_history_and_leaves_on_ctrl_d(chat_and_embed: Daemon):
    daemon = chat_and_embed
    chat = PtyProcess([*CLI, "chat", "p.chat"], {**daemon.env, "TERM": "xterm-256color"})
    try:
        wait_until(lambda: prompts(chat.text()) == 1, 20, "the first prompt", chat.text)
        assert "chatting with p.chat through http://127.0.0.1:" in chat.text()
        chat.type(b"hello\r")
        wait_until(lambda: prompts(chat.text()) == 2, 20, "the first answer", chat.text)
        # The stand-in answers with the length of everything it was sent.
        assert "fake completion of 5 chars" in chat.text()
        chat.type(b"again\r")
        wait_until(lambda: prompts(chat.text()) == 3, 20, "the second answer", chat.text)
        # hello (5) + the first answer (26) + again (5): the history went with the question.
        assert "fake completion of 36 chars" in chat.text()
        chat.type(b"\x04")
        assert chat.finish(20) == 0, chat.text()
    finally:
        chat.close()


def test_ctrl_c_stops_an_answer_and_the_chat_goes_on(make_daemon: Any):
    daemon = ready_daemon(make_daemon, {"name": "chat", "env": SLOW_STREAM})
    chat = PtyProcess([*CLI, "chat", "p.chat"], {**daemon.env, "TERM": "xterm-256color"})
    try:
        wait_until(lambda: prompts(chat.text()) == 1, 20, "the first prompt", chat.text)
        chat.type(b"hello\r")
        wait_until(lambda: chat.text().count("fake") >= 3, 20, "the answer streaming", chat.text)
        chat.type(b"\x03")
        wait_until(lambda: prompts(chat.text()) == 2, 20, "the prompt again", chat.text)
        assert "[answer interrupted]" in chat.text()
        port = daemon.engine("p.chat")["port"]

        def cancelled() -> list[Any]:
            return httpx.get(f"http://127.0.0.1:{port}/fake/stats", timeout=5).json()["cancelled"]

        # The engine's request was cancelled, not left generating.
        daemon.wait_for(cancelled, 10, "the engine to see its request cancelled")
        # An engine dying mid-answer ends that answer with the error, not the session.
        shown = chat.text().count("fake")
        chat.type(b"more\r")
        wait_until(lambda: chat.text().count("fake") > shown + 2, 20, "streaming", chat.text)
        os.kill(daemon.engine("p.chat")["pid"], signal.SIGKILL)
        wait_until(lambda: prompts(chat.text()) == 3, 20, "the prompt after the error", chat.text)
        assert "error: the sagellm gateway at http://127.0.0.1:" in chat.text()
        assert "ended the stream" in chat.text()
        chat.type(b"/bye\r")
        assert chat.finish(20) == 0, chat.text()
    finally:
        chat.close()


def test_piped_and_one_shot_chat_and_its_exit_codes(chat_and_embed: Daemon):
    daemon = chat_and_embed
    piped = daemon.cli("chat", "p.chat", input_text="hi\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "fake completion of 2 chars\n"
    system = daemon.cli("chat", MODEL, "--system", "be brief", input_text="hi")
    assert system.stdout == "fake completion of 10 chars\n", system.stderr
    one = daemon.cli("chat", MODEL, "--prompt", "hey", "--max-tokens", "2", "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == {
        "text": "fake completion",
        "finish_reason": "length",
        "tokens_used": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }

    unknown = daemon.cli("chat", "nope", "--prompt", "x")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "The model 'nope' does not exist here" in unknown.stderr
    for name in (MODEL, "p.chat", EMBEDDER, "p.embed"):
        assert name in unknown.stderr
    embedding = daemon.cli("chat", "p.embed", "--prompt", "x")
    assert embedding.returncode == 2 and "sagellm embed p.embed" in embedding.stderr
    empty = daemon.cli("chat", "p.chat", input_text="")
    assert empty.returncode == 2 and "stdin is empty" in empty.stderr
    away = f"http://127.0.0.1:{free_port()}"
    for args in (["--url", away, "chat", "p.chat"], ["chat", "p.chat", "--gateway", away]):
        unreachable = daemon.cli(*args, "--prompt", "x")
        assert unreachable.returncode == 3, unreachable.stderr
        assert away in unreachable.stderr and "not reachable" in unreachable.stderr


def test_embed_prints_one_vector_per_line_or_one_json_object(make_daemon: Any):
    daemon = ready_daemon(
        make_daemon, {"name": "embed", "kind": "embedding", "runtime": "vllm", "model": EMBEDDER}
    )
    lines = daemon.cli("embed", "p.embed", "one", "two")
    assert lines.returncode == 0, lines.stderr
    vectors = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    assert all(isinstance(x, float) for x in vectors[0])
    whole = json.loads(daemon.cli("embed", EMBEDDER, "one", "two", "--json").stdout)
    assert whole == {"vectors": vectors, "dim": len(vectors[0]), "model_id": EMBEDDER}
    piped = daemon.cli("embed", "p.embed", input_text="one\n\ntwo\n")
    assert [json.loads(line) for line in piped.stdout.splitlines()] == vectors
    unknown = daemon.cli("embed", "nope", "x")
    assert unknown.returncode == 2 and "Routable names: fake/embedder, p.embed" in unknown.stderr
    nothing = daemon.cli("embed", "p.embed", input_text="")
    assert nothing.returncode == 2 and "no text to embed" in nothing.stderr
