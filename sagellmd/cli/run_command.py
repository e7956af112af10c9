"""`sagellm run MODEL [PROMPT]`, as `ollama run`: use the engine that serves MODEL, or declare
an ad-hoc one for it; wait for it with a progress line; answer PROMPT or open a chat.

A thin client like the rest of the CLI: the daemon's API for the engines and their events,
the gateway (through sagellmd.client) for the answers.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import typer

from sagellmd.cli.client import ApiClient, segment
from sagellmd.cli.context import cli_context
from sagellmd.cli.inference_commands import (
    GATEWAY_OPTION,
    MAX_TOKENS_OPTION,
    SYSTEM_OPTION,
    TEMPERATURE_OPTION,
    gateway_client,
    interactive,
    stream_answer,
)
from sagellmd.cli.run_progress import (
    SERVING,
    BackgroundWatch,
    EngineWatch,
    ProgressLine,
    engine_views,
    start_failed,
)
from sagellmd.cli.run_target import RunTarget, run_target
from sagellmd.client import Client, ClientError
from sagellmd.errors import BadInputError, SagellmError

DEFAULT_TIMEOUT_S = 900.0
# After a declaration the gateway learns of the engine from the daemon's route table
# within milliseconds; this only bounds a gateway that does not.
ROUTABLE_WITHIN_S = 10.0
MODEL_NOT_FOUND = "model_not_found"


def note(text: str) -> None:
    """What run does, on stderr: stdout holds the answer only."""
    typer.echo(text, err=True)


def served_by(client: Client, model: str) -> tuple[list[str], str | None] | None:
    """The engines the gateway routes MODEL to, and their kind; None if it routes none."""
    try:
        entry = client.model(model)
    except ClientError as exc:
        if exc.code == MODEL_NOT_FOUND:
            return None
        raise
    ids = [str(e["id"]) for e in entry.get("engines") or [] if isinstance(e, dict)]
    return ids, entry.get("kind")


def declared_for(api: ApiClient, model: str, target: RunTarget) -> tuple[list[str], str] | None:
    """An engine the daemon has for MODEL that the gateway does not route yet (just declared
    by another run); BadInputError if the name run would take is another model's."""
    for entry in (api.get("/v1/engines") or {}).get("engines") or []:
        spec = entry.get("spec") or {}
        if entry.get("id") == target.name and spec.get("model") != model:
            raise BadInputError(
                f"engine {target.name} already exists and runs {spec.get('model')!r}, not"
                f" {model!r}: give --name NAME for another engine"
            )
        if entry.get("id") == target.name:
            return [str(entry["id"])], str(spec.get("kind") or entry.get("kind") or "llm")
    return None


def find_or_declare(
    api: ApiClient, client: Client, model: str, target: RunTarget, needs_prompt: bool
) -> tuple[list[str], str]:
    """The engines that will answer, and their kind; declares the ad-hoc engine if needed."""
    found = served_by(client, model) or declared_for(api, model, target)
    if found is not None:
        ids, kind = found
        note(f"using engine {', '.join(ids)}")
        return ids, kind or "llm"
    if target.kind == "embedding" and needs_prompt:
        raise embedding_needs_text(model)
    answer = api.put(f"/v1/engines/{segment(target.name)}", body=target.spec) or {}
    note(
        f"declared engine {target.name} for {model} ({target.describe()};"
        f" generation {answer.get('generation', '?')})"
    )
    return [target.name], target.kind


def embedding_needs_text(model: str) -> BadInputError:
    return BadInputError(
        f"{model} is an embedding model: give the TEXT to embed (sagellm run {model} TEXT)"
    )


def wait_routable(client: Client, model: str, timeout_s: float = ROUTABLE_WITHIN_S) -> None:
    """Until the gateway's table routes MODEL (a request sent before would be a 404)."""
    deadline = time.monotonic() + timeout_s
    while served_by(client, model) is None:
        if time.monotonic() >= deadline:
            raise SagellmError(
                f"the gateway at {client.gateway_url} does not route {model} although the"
                f" daemon declares it (waited {timeout_s:g} s); check `sagellm gateway`"
            )
        time.sleep(0.05)


def interrupt_main_thread() -> None:
    """A real SIGINT to the main thread: it sits in a socket read, which only a signal ends
    (`_thread.interrupt_main` would wait for the gateway's next byte)."""
    main = threading.main_thread().ident
    if main is not None:
        signal.pthread_kill(main, signal.SIGINT)


class Answering:
    """Answers turns; while the engines are not ready (idle: the request starts them), the
    progress line shows them until the first piece of the answer arrives."""

    def __init__(self, api: ApiClient, engine_ids: Sequence[str]) -> None:
        self.api = api
        self.engine_ids = list(engine_ids)

    def serving(self) -> bool:
        views = engine_views(self.api.get("/v1/status") or {}, self.engine_ids)
        return any(v.state == SERVING for v in views)

    def __call__(
        self, client: Client, model: str, messages: list[dict[str, Any]], options: Any
    ) -> str:
        if self.serving():
            return stream_answer(client, model, messages, options)
        watch = EngineWatch(self.api, self.engine_ids, ProgressLine())
        # A failed start interrupts the wait for the answer (the main thread sits in it).
        with BackgroundWatch(watch, interrupt_main_thread) as background:
            try:
                return stream_answer(client, model, messages, options, on_first=background.stop)
            except KeyboardInterrupt:
                if background.failed is None:
                    raise
                raise start_failed(background.failed, self.engine_ids) from None
            except ClientError as exc:
                if background.failed is None:
                    raise
                raise start_failed(background.failed, self.engine_ids) from exc


def run(
    ctx: typer.Context,
    model: str = typer.Argument(
        ..., metavar="MODEL", help="A routable name, or a Hugging Face id, path or .gguf to run."
    ),
    prompt: str | None = typer.Argument(
        None, metavar="PROMPT", help="Answer this and exit (default: an interactive chat)."
    ),
    name: str | None = typer.Option(
        None, "--name", metavar="NAME", help="Name of the engine to declare (default: from MODEL)."
    ),
    kind: str | None = typer.Option(
        None,
        "--kind",
        metavar="KIND",
        help="llm or embedding (default: guessed from MODEL's name).",
    ),
    runtime: str | None = typer.Option(
        None,
        "--runtime",
        metavar="RUNTIME",
        help="Runtime from the config (default: llama-cpp for GGUF, else vllm).",
    ),
    system: str | None = SYSTEM_OPTION,
    max_tokens: int | None = MAX_TOKENS_OPTION,
    temperature: float | None = TEMPERATURE_OPTION,
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S, "--timeout", min=1.0, metavar="S", help="Longest wait for the engine."
    ),
    gateway_url: str | None = GATEWAY_OPTION,
) -> None:
    """Run MODEL: use the engine that serves it or declare one, wait for it, then answer
    PROMPT (or piped stdin), or chat on a terminal (Ctrl-D or /bye to leave)."""
    target = run_target(model, kind, runtime, name)
    model = model.strip()
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise BadInputError("stdin is empty: pipe a question in, or give PROMPT")
    if prompt is not None and not prompt.strip():
        raise BadInputError("PROMPT is empty: give a question, or leave it out to chat")
    options = {
        key: value
        for key, value in (("max_tokens", max_tokens), ("temperature", temperature))
        if value is not None
    }
    api = cli_context(ctx).client()
    try:
        with gateway_client(ctx, gateway_url) as client:
            ids, engine_kind = find_or_declare(api, client, model, target, prompt is None)
            if engine_kind == "embedding" and prompt is None:
                raise embedding_needs_text(model)
            line = ProgressLine()
            EngineWatch(api, ids, line).until_serving(timeout)
            line.clear(close=True)
            wait_routable(client, model)
            if engine_kind == "embedding":
                assert prompt is not None
                typer.echo(json.dumps(client.embed([prompt], model)["vectors"][0]))
                return
            history: list[dict[str, Any]] = (
                [{"role": "system", "content": system}] if system else []
            )
            answering = Answering(api, ids)
            if prompt is None:
                interactive(client, model, history, options, answering)
                return
            answering(client, model, [*history, {"role": "user", "content": prompt}], options)
    finally:
        api.close()
