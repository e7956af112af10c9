"""The `sagellm engine` commands: list, start and stop ad-hoc engines, restart and read logs."""

from __future__ import annotations

import sys
from typing import Any, Literal

import typer

from sagellmd.cli.changes import DRY_RUN_OPTION, NO_ROLLBACK_OPTION, ChangeOptions, run_change
from sagellmd.cli.client import segment
from sagellmd.cli.completion import complete_adhoc_engine_id, complete_engine_id
from sagellmd.cli.context import cli_context
from sagellmd.cli.help_format import SagellmGroup
from sagellmd.cli.model_kind import kind_on_disk
from sagellmd.cli.render import engines_table, print_json, print_table
from sagellmd.errors import BadInputError
from sagellmd.spec import name_from_model, parse_engine

engine_app = typer.Typer(
    cls=SagellmGroup,
    help="List engines; start, stop, restart ad-hoc engines; show logs.",
    no_args_is_help=True,
)

ID_ARG = typer.Argument(
    ...,
    metavar="ID",
    help="Engine id (<preset>.<name> or <name>).",
    autocompletion=complete_engine_id,
)
ADHOC_ID_ARG = typer.Argument(
    ..., metavar="ID", help="Ad-hoc engine id.", autocompletion=complete_adhoc_engine_id
)


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`--env K=V` options as a mapping; a value may itself contain '='."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInputError(f"--env {pair!r}: must be KEY=VALUE, e.g. --env HF_HUB_OFFLINE=1")
        env[key] = value
    return env


@engine_app.command("list")
def list_engines(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the raw JSON.")
) -> None:
    """Every engine the daemon knows, with its state."""
    client = cli_context(ctx).client()
    try:
        answer = client.get("/v1/engines") or {}
    finally:
        client.close()
    if as_json:
        print_json(answer)
        return
    engines = answer.get("engines") or []
    if not engines:
        typer.echo("no engines")
        return
    print_table(engines_table(engines))


def _extra_words_error(extras: list[str], engine_args: list[str]) -> BadInputError:
    """Words left over after the options: usually the value of an `--arg` flag."""
    words = " ".join(extras)
    flag = next((a for a in reversed(engine_args) if a.startswith("-") and "=" not in a), None)
    if flag is None:
        return BadInputError(
            f"engine start takes one MODEL; {words!r} is left over (an engine argument goes"
            " in --arg, once per argv word)"
        )
    value = extras[0]
    return BadInputError(
        f"{words!r} is left over after --arg {flag}: --arg takes one argv word, so repeat"
        f" --arg once per argv word (--arg {flag} --arg {value}) or join the flag and its"
        f" value (--arg={flag}={value})"
    )


@engine_app.command("start", context_settings={"allow_extra_args": True})
def start(
    ctx: typer.Context,
    model: str = typer.Argument(..., metavar="MODEL", help="Hugging Face id or local path."),
    name: str | None = typer.Option(None, "--name", help="Engine name (default: from MODEL)."),
    kind: Literal["llm", "embedding"] | None = typer.Option(
        None,
        "--kind",
        help="Engine kind (default: what the model on disk is for, else llm).",
        show_default=False,
    ),
    runtime: str | None = typer.Option(None, "--runtime", help="Runtime from the config."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Fixed port."),
    tensor_parallel: int | None = typer.Option(
        None, "--tensor-parallel", min=1, metavar="N", help="GPUs per pipeline stage."
    ),
    pipeline_parallel: int | None = typer.Option(
        None, "--pipeline-parallel", min=1, metavar="N", help="Pipeline stages."
    ),
    use_gpu: bool | None = typer.Option(
        None, "--use-gpu/--no-gpu", help="Force GPU use on or off.", show_default=False
    ),
    label: str | None = typer.Option(None, "--label", help="Free-text label."),
    max_concurrent_requests: int | None = typer.Option(
        None, "--max-concurrent-requests", min=1, metavar="N", help="Concurrency cap."
    ),
    extra_args: list[str] | None = typer.Option(
        None,
        "--arg",
        metavar="WORD",
        help="One argv word for the engine; repeat per word (--arg --dtype --arg half)"
        " or join (--arg=--dtype=half).",
    ),
    env: list[str] | None = typer.Option(
        None, "--env", metavar="K=V", help="Environment variable (repeatable)."
    ),
    dry_run: bool = DRY_RUN_OPTION,
    no_rollback: bool = NO_ROLLBACK_OPTION,
) -> None:
    """Create or replace the ad-hoc engine NAME running MODEL."""
    if ctx.args:
        raise _extra_words_error(list(ctx.args), list(extra_args or []))
    engine_name = name or name_from_model(model)
    if not engine_name:
        raise BadInputError(f"cannot derive an engine name from {model!r}; give --name")
    spec: dict[str, Any] = {"model": model}
    options: dict[str, Any] = {
        "kind": kind,
        "runtime": runtime,
        "port": port,
        "tensor_parallel": tensor_parallel,
        "pipeline_parallel": pipeline_parallel,
        "use_gpu": use_gpu,
        "label": label,
        "max_concurrent_requests": max_concurrent_requests,
        "extra_args": list(extra_args) if extra_args else None,
        "env": parse_env(env) if env else None,
    }
    spec.update({key: value for key, value in options.items() if value is not None})
    # Validate here too so a typo fails fast with the field named, daemon or not.
    parse_engine({**spec, "name": engine_name})
    header = [f"engine {engine_name}"]
    client = cli_context(ctx).client()
    try:
        found = kind_on_disk(client, model) if kind is None else None
        if found is not None and found.kind != "llm":
            # llm is the default anyway; only a different kind is worth a line.
            spec["kind"] = found.kind
            header.append(found.note())
        run_change(
            client,
            lambda params: client.put(
                f"/v1/engines/{segment(engine_name)}", body=spec, params=params
            ),
            ChangeOptions(dry_run=dry_run, rollback=not no_rollback),
            header=lambda _: header,
        )
    finally:
        client.close()


@engine_app.command("stop")
def stop(
    ctx: typer.Context,
    engine_id: str = ADHOC_ID_ARG,
    dry_run: bool = DRY_RUN_OPTION,
    no_rollback: bool = NO_ROLLBACK_OPTION,
) -> None:
    """Remove an ad-hoc engine (use `preset unset` for a preset's engines)."""
    client = cli_context(ctx).client()
    try:
        run_change(
            client,
            lambda params: client.delete(f"/v1/engines/{segment(engine_id)}", params=params),
            ChangeOptions(dry_run=dry_run, rollback=not no_rollback),
        )
    finally:
        client.close()


@engine_app.command("restart")
def restart(ctx: typer.Context, engine_id: str = ID_ARG) -> None:
    """Restart one engine's process."""
    client = cli_context(ctx).client()
    try:
        answer = client.post(f"/v1/engines/{segment(engine_id)}/restart") or {}
    finally:
        client.close()
    when = answer.get("requested_at")
    typer.echo(
        f"restart of {answer.get('engine', engine_id)} requested" + (f" at {when}" if when else "")
    )


@engine_app.command("logs")
def logs(
    ctx: typer.Context,
    engine_id: str = ID_ARG,
    tail: int = typer.Option(100, "--tail", min=1, metavar="N", help="Number of lines."),
) -> None:
    """Print the end of an engine's log."""
    client = cli_context(ctx).client()
    try:
        answer = client.get(f"/v1/engines/{segment(engine_id)}/logs", {"tail": tail}) or {}
    finally:
        client.close()
    # Plain writes: log lines are arbitrary text, not rich markup.
    for line in answer.get("lines") or []:
        sys.stdout.write(f"{str(line).rstrip(chr(10))}\n")
