"""`sagellm run` against a real daemon, its gateway and stand-in engines: it declares an
engine for a model nothing serves, waits for it, answers or chats, and reuses it next time."""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.integration.conftest import FAKE_VLLM, Daemon, free_port
from tests.integration.terminal import CLI, PtyProcess, wait_until

MODEL = "fake/model-1B"
ENGINE = "model-1b"  # the name run derives from MODEL


def gateway_daemon(make_daemon: Any, **overrides: Any) -> Daemon:
    return make_daemon(gateway={"enabled": True, "port": free_port()}, **overrides)


def generation(daemon: Daemon) -> int:
    return int(daemon.get("/v1/status").json()["generation"])


def test_run_declares_an_engine_waits_for_it_answers_and_reuses_it(make_daemon: Any):
    daemon = gateway_daemon(make_daemon)
    first = daemon.cli("run", MODEL, "hello")
    assert first.returncode == 0, first.stderr
    # The stand-in answers with the length of what it was sent: the prompt, streamed.
    assert first.stdout == "fake completion of 5 chars\n"
    assert f"declared engine {ENGINE} for {MODEL} (llm on vllm, on-demand;" in first.stderr
    # The wait was shown (stderr is not a terminal: one line per change): declared idle, the
    # request started it.
    waited = [line for line in first.stderr.splitlines() if line.startswith(f"{ENGINE}: ")]
    assert waited[0] == f"{ENGINE}: idle (on demand: starts on the first request)", waited
    assert f"{ENGINE}: starting (waiting for /health)" in waited
    entry = daemon.engine(ENGINE)
    assert entry["state"] == "ready" and entry["preset"] is None
    spec = entry["spec"]
    assert (spec["model"], spec["kind"], spec["runtime"]) == (MODEL, "llm", "vllm")
    assert spec["start"] == "on-demand"
    declared = generation(daemon)

    again = daemon.cli("run", MODEL, "hello again", "--max-tokens", "2")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "fake completion\n"
    assert again.stderr.strip() == f"using engine {ENGINE}"
    by_name = daemon.cli("run", ENGINE, input_text="hi\n")
    assert by_name.returncode == 0 and by_name.stdout == "fake completion of 2 chars\n"
    # Nothing was declared again, and the engine kept its process.
    assert generation(daemon) == declared
    assert daemon.engine(ENGINE)["pid"] == entry["pid"]
    assert [e["id"] for e in daemon.get("/v1/engines").json()["engines"]] == [ENGINE]


def prompts(text: str) -> int:
    return text.count(">>> ")


def test_run_opens_an_interactive_chat_with_history(make_daemon: Any):
    daemon = gateway_daemon(make_daemon)
    run = PtyProcess([*CLI, "run", MODEL, "--name", "chat"], {**daemon.env, "TERM": "xterm"})
    try:
        wait_until(lambda: prompts(run.text()) == 1, 30, "the first prompt", run.text)
        text = run.text()
        assert "declared engine chat for fake/model-1B" in text
        assert "chatting with fake/model-1B through http://127.0.0.1:" in text
        assert daemon.engine("chat")["state"] == "idle"
        run.type(b"hello\r")
        wait_until(lambda: prompts(run.text()) == 2, 20, "the first answer", run.text)
        # The first question started the engine; the progress line showed it meanwhile
        # (redrawn in place, then cleared for the answer).
        assert "chat: idle (on demand" in run.text() or "chat: starting" in run.text()
        assert "fake completion of 5 chars" in run.text()
        run.type(b"again\r")
        wait_until(lambda: prompts(run.text()) == 3, 20, "the second answer", run.text)
        # hello (5) + the first answer (26) + again (5): the history went with the question.
        assert "fake completion of 36 chars" in run.text()
        run.type(b"\x04")
        assert run.finish(20) == 0, run.text()
    finally:
        run.close()
    assert daemon.engine("chat")["state"] == "ready"


def test_run_exit_codes(make_daemon: Any):
    daemon = gateway_daemon(make_daemon)
    for args, fragment in (
        (["--kind", "nope"], "--kind 'nope': must be one of llm, embedding"),
        (["--name", "Bad_Name"], "--name 'Bad_Name' must be lowercase"),
        (["--name", "gateway"], "reserved for sagellm's own gateway"),
    ):
        refused = daemon.cli("run", MODEL, "hi", *args)
        assert refused.returncode == 2 and fragment in refused.stderr, refused.stderr
    empty = daemon.cli("run", MODEL, input_text="")
    assert empty.returncode == 2 and "stdin is empty" in empty.stderr
    # An embedding model has nothing to chat about: refused before anything is declared.
    chat = PtyProcess([*CLI, "run", "fake/embedder"], daemon.env)
    try:
        assert chat.finish(20) == 2, chat.text()
        assert "fake/embedder is an embedding model: give the TEXT to embed" in chat.text()
    finally:
        chat.close()
    assert daemon.get("/v1/engines").json()["engines"] == []
    # The name run would take belongs to another model's engine.
    taken = daemon.put("/v1/engines/model-1b", {"model": "fake/other-1B"})
    assert taken.status_code == 201, taken.text
    clash = daemon.cli("run", MODEL, "hi")
    assert clash.returncode == 2, clash.stderr
    assert "engine model-1b already exists and runs 'fake/other-1B'" in clash.stderr
    assert "--name" in clash.stderr
    away = f"http://127.0.0.1:{free_port()}"
    unreachable = daemon.cli("--url", away, "run", MODEL, "hi")
    assert unreachable.returncode == 3 and away in unreachable.stderr


def test_run_reports_an_engine_that_fails_to_start(make_daemon: Any):
    # The stand-in refuses an unknown flag (exit 2), as vLLM does.
    broken = {"vllm": {"command": [sys.executable, str(FAKE_VLLM), "--no-such-flag"]}}
    daemon = gateway_daemon(make_daemon, runtimes=broken)
    failed = daemon.cli("run", MODEL, "hi")
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout == ""
    error = failed.stderr.splitlines()[-1]
    assert error.startswith(f"error: the engine failed to start: {ENGINE} backoff: exit code 2;")
    assert "unrecognized arguments: --no-such-flag" in error
    assert f"sagellm engine logs {ENGINE}" in error


def test_run_embeds_a_text_with_an_embedding_model(make_daemon: Any):
    daemon = gateway_daemon(make_daemon)
    # The stand-in serves embeddings too; the guess (embedding on runtime embedding) is
    # overridden to run it.
    embedded = daemon.cli("run", "fake/embedder", "some text", "--runtime", "vllm")
    assert embedded.returncode == 0, embedded.stderr
    assert "declared engine embedder for fake/embedder (embedding on vllm" in embedded.stderr
    vector = json.loads(embedded.stdout)
    assert len(vector) > 1 and all(isinstance(x, float) for x in vector)
    assert daemon.engine("embedder")["spec"]["kind"] == "embedding"
    same = daemon.cli("embed", "fake/embedder", "some text")
    assert json.loads(same.stdout) == vector


def test_run_waits_for_a_starting_engine_and_starts_an_idle_one_again(make_daemon: Any):
    daemon = gateway_daemon(make_daemon)
    # Long enough that a CLI slow to start on a loaded machine still finds it starting.
    slow = {"model": MODEL, "env": {"FAKE_VLLM_STARTUP_DELAY": "4"}}
    assert daemon.put("/v1/engines/slow", slow).status_code == 201
    waited = daemon.cli("run", "slow", "hi")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout == "fake completion of 2 chars\n"
    lines = waited.stderr.splitlines()
    assert lines[0] == "using engine slow"
    # Waited for before the question was sent: the line showed it starting, then ready.
    assert any(line.startswith("slow: starting") for line in lines), lines
    assert lines[-1] == "slow: ready (healthy)"

    # An on-demand engine that went idle (stopped) is started again by the next run.
    brief = {"model": "fake/brief-1B", "start": "on-demand", "idle_s": 1}
    assert daemon.put("/v1/engines/brief", brief).status_code == 201
    first = daemon.cli("run", "fake/brief-1B", "one")
    assert first.returncode == 0 and first.stdout == "fake completion of 3 chars\n", first.stderr
    pid = daemon.engine("brief")["pid"]
    daemon.wait_state("brief", "idle", timeout=20)
    again = daemon.cli("run", "fake/brief-1B", "two")
    assert again.returncode == 0 and again.stdout == "fake completion of 3 chars\n", again.stderr
    assert "brief: idle (idle: no request for 1 s" in again.stderr
    assert daemon.engine("brief")["pid"] not in (None, pid)
