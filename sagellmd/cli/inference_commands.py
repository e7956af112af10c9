"""`sagellm chat` and `sagellm embed`: requests through the gateway, as applications make them.

Both use the Python client (sagellmd.client): the daemon is asked only where the gateway is.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from sagellmd.cli.context import cli_context
from sagellmd.client import Client, ClientError
from sagellmd.client.errors import INVALID_INPUT
from sagellmd.errors import BadInputError, DaemonUnreachableError, SagellmError

PROMPT = ">>> "
# Typed at the prompt, these leave the chat as Ctrl-D does (`/bye` as in `ollama run`).
LEAVE_WORDS = frozenset({"/bye", "/exit"})
GATEWAY_OPTION = typer.Option(
    None,
    "--gateway",
    metavar="URL",
    help="Gateway URL (default: the one the daemon runs, from GET /v1/gateway).",
)
# The chat options `sagellm chat` and `sagellm run` share.
SYSTEM_OPTION = typer.Option(
    None, "--system", metavar="TEXT", help="A system message sent before the conversation."
)
MAX_TOKENS_OPTION = typer.Option(
    None, "--max-tokens", min=1, metavar="N", help="At most N tokens per answer."
)
TEMPERATURE_OPTION = typer.Option(
    None, "--temperature", min=0.0, metavar="T", help="Sampling temperature."
)
MODEL_ARG = typer.Argument(
    ..., metavar="MODEL", help="A routable name: served model, engine id, label or alias."
)


def as_cli_error(exc: ClientError) -> SagellmError:
    """The CLI's exit codes: 3 unreachable, 2 refused input (4xx, unknown model), else 1."""
    if exc.unreachable:
        return DaemonUnreachableError(exc.message)
    # 429 (queue full, SLO unreachable) is load, not the user's input: a failure, like 503.
    refused = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
    if refused or exc.code == INVALID_INPUT:
        return BadInputError(exc.message)
    return SagellmError(exc.message)


@contextmanager
def gateway_client(ctx: typer.Context, gateway_url: str | None) -> Iterator[Client]:
    """A Client for the daemon of `--url` (or SAGELLM_URL); its errors become exit codes."""
    try:
        with Client(url=cli_context(ctx).url, gateway_url=gateway_url) as client:
            yield client
    except ClientError as exc:
        raise as_cli_error(exc) from None


def stream_answer(
    client: Client,
    model: str,
    messages: list[dict[str, Any]],
    options: Any,
    on_first: Callable[[], None] | None = None,
) -> str:
    """Print the answer as it comes (`on_first` runs just before its first piece); the whole
    text (for the session's history)."""
    pieces: list[str] = []
    for piece in client.stream_chat(messages, model, **options):
        if not pieces and on_first is not None:
            on_first()
        pieces.append(piece)
        typer.echo(piece, nl=False)
    typer.echo()
    return "".join(pieces)


def _read_line() -> str | None:
    """One line typed at the prompt; None when the user leaves (Ctrl-D, or Ctrl-C)."""
    try:
        line = input(PROMPT)
    except EOFError:
        typer.echo()
        return None
    except KeyboardInterrupt:
        typer.echo()
        return None
    return None if line.strip() in LEAVE_WORDS else line


# How one turn is answered: (client, model, messages, options) -> the answer's text.
Answerer = Callable[[Client, str, list[dict[str, Any]], Any], str]


def interactive(
    client: Client,
    model: str,
    history: list[dict[str, Any]],
    options: Any,
    answer_turn: Answerer = stream_answer,
) -> None:
    """The session: each line is a user turn; the answers stay in the history it sends."""
    try:
        import readline  # noqa: F401  (line editing and recall for input())
    except ImportError:
        pass
    typer.echo(f"chatting with {model} through {client.gateway_url}; Ctrl-D or /bye to leave")
    while (line := _read_line()) is not None:
        if not line.strip():
            continue
        turn = [*history, {"role": "user", "content": line}]
        try:
            answer = answer_turn(client, model, turn, options)
        except KeyboardInterrupt:
            # The answer stops (the gateway cancels the engine's request); the turn is dropped.
            typer.echo("\n[answer interrupted]")
            continue
        except ClientError as exc:
            if exc.unreachable:
                raise
            # One failed answer (an engine that died, a full queue) need not end the session.
            typer.echo(f"\nerror: {exc.message}", err=True)
            continue
        history[:] = [*turn, {"role": "assistant", "content": answer}]


def chat(
    ctx: typer.Context,
    model: str = MODEL_ARG,
    prompt: str | None = typer.Option(
        None, "--prompt", "-p", metavar="TEXT", help="Ask this one question and exit."
    ),
    system: str | None = SYSTEM_OPTION,
    max_tokens: int | None = MAX_TOKENS_OPTION,
    temperature: float | None = TEMPERATURE_OPTION,
    as_json: bool = typer.Option(
        False,
        "--json",
        help='With --prompt or piped input: print {"text", "finish_reason", "tokens_used"}.',
    ),
    gateway_url: str | None = GATEWAY_OPTION,
) -> None:
    """Chat with MODEL through the gateway: interactive on a terminal (history kept for the
    session, Ctrl-D to leave); one answer for --prompt or piped stdin."""
    options = {
        key: value
        for key, value in (("max_tokens", max_tokens), ("temperature", temperature))
        if value is not None
    }
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise BadInputError("stdin is empty: pipe a question in, or give --prompt TEXT")
    with gateway_client(ctx, gateway_url) as client:
        entry = client.model(model)  # an unknown name fails here, before anything is typed
        if entry.get("kind") == "embedding":
            raise BadInputError(f"{model} is an embedding model: use `sagellm embed {model} TEXT`")
        if prompt is None:
            if as_json:
                raise BadInputError("--json needs --prompt TEXT or piped input")
            interactive(client, model, history, options)
            return
        messages = [*history, {"role": "user", "content": prompt}]
        if as_json:
            typer.echo(json.dumps(client.chat(messages, model, **options)))
        else:
            stream_answer(client, model, messages, options)


def embed(
    ctx: typer.Context,
    model: str = MODEL_ARG,
    texts: list[str] | None = typer.Argument(
        None, metavar="TEXT...", help="Texts to embed (default: the lines of piped stdin)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help='Print one object {"model_id", "dim", "vectors"}.'
    ),
    gateway_url: str | None = GATEWAY_OPTION,
) -> None:
    """Embed TEXT... with MODEL through the gateway: one JSON array per text, per line."""
    if not texts:
        if sys.stdin.isatty():
            raise BadInputError("give TEXT... to embed, or pipe lines in")
        texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not texts:
            raise BadInputError("stdin has no text to embed (one text per line)")
    with gateway_client(ctx, gateway_url) as client:
        result = client.embed(texts, model)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for vector in result["vectors"]:
        typer.echo(json.dumps(vector))
