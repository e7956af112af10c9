"""The `sagellm model` commands: list, download and delete the models on this machine."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import typer
from rich.table import Table

from sagellmd.cli.context import CliContext, cli_context
from sagellmd.cli.help_format import SagellmGroup
from sagellmd.cli.render import cell, console, print_json
from sagellmd.config import load_settings
from sagellmd.errors import BadInputError, DaemonUnreachableError, SagellmError
from sagellmd.gpu.estimate import EstimateSettings
from sagellmd.models.catalog import Catalog, scan_catalog
from sagellmd.models.delete import plan_delete
from sagellmd.models.describe import directory_size
from sagellmd.models.download import download_model, split_file_reference, validate_model_id
from sagellmd.models.jobs import job_outcome
from sagellmd.models.resolve import hub_cache_for

model_app = typer.Typer(
    cls=SagellmGroup,
    help="Models on this machine: list, download from the Hugging Face hub, delete.",
    no_args_is_help=True,
)

ID_ARG = typer.Argument(..., metavar="ID", help="Hugging Face model id, e.g. Qwen/Qwen2.5-0.5B.")
FOLLOW_WAIT_S = 30


def local_catalog(state: CliContext) -> Catalog:
    """The catalog as this shell sees it: its hub cache and the config in SAGELLM_HOME."""
    settings = load_settings(home=state.home)
    return scan_catalog(
        settings.model_paths,
        hub_cache_for(os.environ),
        settings.home,
        EstimateSettings(settings.kv_cache_gb, settings.overhead_gb, settings.model_paths),
    )


def size_text(size: Any) -> str:
    """Bytes as the hf CLI shows them: 87.4M, 1.2G."""
    if not isinstance(size, int | float):
        return "-"
    for unit, scale in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{int(size)}B"


def parameters_text(count: Any) -> str:
    if not isinstance(count, int) or count <= 0:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.{2 if unit == 'B' else 1}f}{unit}"
    return str(count)


def ago_text(iso: Any, now: float | None = None) -> str:
    """'-', '5m ago', '3h ago', '2d ago' for an ISO timestamp from the API."""
    if not isinstance(iso, str) or not iso:
        return "-"
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return iso
    seconds = max(0.0, (time.time() if now is None else now) - then)
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= scale:
            return f"{seconds // scale:.0f}{unit} ago"
    return "just now"


SOURCE_LABELS = {"hub-cache": "cache", "models.paths": "paths", "package": "package"}


def models_table(models: list[dict[str, Any]], with_engines: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", overflow="fold")
    for column in ("REVISION", "SOURCE", "KIND", "PARAMS", "SIZE", "EST/GPU", "LAST USED"):
        table.add_column(column, no_wrap=True)
    if with_engines:
        table.add_column("ENGINES", overflow="fold")
    for model in models:
        revision = (model.get("revision") or "")[:8]
        if model.get("refs"):
            revision += f" {','.join(model['refs'])}"
        estimate = model.get("memory_estimate") or {}
        gb = estimate.get("gb")
        row = [
            cell(model.get("id")),
            cell(revision),
            cell(SOURCE_LABELS.get(model.get("source") or "", model.get("source"))),
            cell(model.get("kind") or "?"),
            cell(parameters_text(model.get("parameters"))),
            cell(size_text(model.get("size_bytes"))),
            cell(f"{gb:.1f}G" if isinstance(gb, int | float) else None),
            cell(ago_text(model.get("last_used"))),
        ]
        if with_engines:
            row.append(cell(", ".join(model.get("used_by") or [])))
        table.add_row(*row)
    return table


@model_app.command("list")
def list_models(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the raw JSON.")
) -> None:
    """Local models with size, kind, parameters, per-GPU estimate, last use and engines."""
    state = cli_context(ctx)
    client = state.client()
    try:
        answer: dict[str, Any] = client.get("/v1/models/local") or {}
        reachable = True
    except DaemonUnreachableError:
        # Listing needs no daemon: the cache is on disk; only `used_by` is unknown.
        answer, reachable = local_catalog(state).to_dict(None), False
    finally:
        client.close()
    answer["daemon_reachable"] = reachable
    if as_json:
        print_json(answer)
        return
    models = answer.get("models") or []
    typer.echo(f"hub cache: {answer.get('cache', '?')}")
    if models:
        out = console()
        if not out.is_terminal:
            out.width = 200  # a pipe has no width to fit; keep one model per line
        out.print(models_table(models, reachable))
    else:
        typer.echo("no local models (get one with `sagellm model download ORG/NAME`)")
    for warning in answer.get("warnings") or []:
        typer.echo(f"warning: {warning}", err=True)
    if not reachable:
        typer.echo("engines: (daemon not reachable)")


def split_patterns(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated --allow-patterns as one list."""
    patterns = [p.strip() for value in values or [] for p in value.split(",") if p.strip()]
    return patterns or None


def _follow_download(state: CliContext, body: dict[str, Any]) -> None:
    """Ask the daemon to download, then print its progress events until the job ends."""
    client = state.client()
    job = "?"
    try:
        answer = client.post("/v1/models/local", body=body) or {}
        job = str((answer.get("download") or {}).get("id", "?"))
        typer.echo(f"the daemon is downloading {body['id']} ({job})")
        cursor = int(answer.get("last_event_id") or 0)
        while True:
            batch = client.events(after=cursor, wait=FOLLOW_WAIT_S)
            for event in batch.get("events") or []:
                cursor = max(cursor, int(event.get("id") or 0))
                message = str(event.get("message") or "")
                if event.get("type") != "model_download" or not message.startswith(f"{job} "):
                    continue
                typer.echo(message)
                outcome = job_outcome(job, message)
                if outcome is not None:
                    raise typer.Exit(0 if outcome == "done" else 1)
            cursor = max(cursor, int(batch.get("last_id") or 0))
    except KeyboardInterrupt:
        typer.echo(f"stopped following; the daemon keeps downloading ({job})", err=True)
    finally:
        client.close()


@model_app.command("download")
def download(
    ctx: typer.Context,
    model_id: str = ID_ARG,
    revision: str | None = typer.Option(
        None, "--revision", metavar="R", help="Branch, tag or commit (default: main)."
    ),
    allow_patterns: list[str] | None = typer.Option(
        None,
        "--allow-patterns",
        metavar="GLOB",
        help="Only files matching GLOB (repeatable or comma-separated), e.g. '*.safetensors'.",
    ),
    via_daemon: bool = typer.Option(
        False, "--daemon", help="Let the daemon download into its cache; follow its events."
    ),
) -> None:
    """Download a model into the Hugging Face cache (resumes an interrupted download).

    `REPO:FILE.gguf` or `REPO:QUANT` (e.g. `Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M`) fetches
    that one file of a repo that holds many, as a llama-cpp engine names its model.
    """
    model_id, file_patterns = split_file_reference(model_id)
    validate_model_id(model_id)
    patterns = (split_patterns(allow_patterns) or []) + (file_patterns or []) or None
    state = cli_context(ctx)
    if via_daemon:
        body = {"id": model_id, "revision": revision, "allow_patterns": patterns}
        _follow_download(state, {k: v for k, v in body.items() if v is not None})
        return
    typer.echo(f"downloading {model_id} into {hub_cache_for(os.environ)}", err=True)
    started = time.monotonic()
    try:
        path = download_model(model_id, revision, patterns)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(
        f"{model_id}: {path} ({size_text(directory_size(path))}, {time.monotonic() - started:.0f}s)"
    )


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInputError(
            "not deleting without a confirmation, and stdin is not a terminal to ask on; pass --yes"
        )
    if not typer.confirm(question, default=False):
        typer.echo("nothing deleted")
        raise typer.Exit(1)


def _summary(plan: dict[str, Any]) -> str:
    revisions = ", ".join(str(r.get("revision") or "?")[:12] for r in plan.get("deleted") or [])
    return (
        f"{plan.get('id')}: {len(plan.get('deleted') or [])} revision(s) ({revisions}),"
        f" {size_text(plan.get('freed_bytes'))} from {plan.get('cache')}"
    )


@model_app.command("delete")
def delete(
    ctx: typer.Context,
    model_id: str = ID_ARG,
    revision: str | None = typer.Option(
        None, "--revision", metavar="R", help="Only this revision (ref or commit prefix)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Delete even though the daemon is unreachable and cannot say who uses the model.",
    ),
) -> None:
    """Delete a model from the Hugging Face cache; refused while a desired engine uses it."""
    validate_model_id(model_id)
    state = cli_context(ctx)
    client = state.client()
    path = f"/v1/models/local/{quote(model_id, safe='/')}"
    params = {"revision": revision}
    try:
        try:
            # A dry run first: refusals (in use, not ours, not found) come before the question.
            plan = client.request("DELETE", path, params={**params, "dry_run": "true"}) or {}
        except DaemonUnreachableError as exc:
            if not force:
                raise DaemonUnreachableError(
                    f"{exc.message}. Without the daemon sagellm cannot tell whether a desired"
                    f" engine uses {model_id}, so it deletes nothing: start the daemon, or pass"
                    " --force to delete it from this shell's cache anyway"
                ) from exc
            _delete_without_daemon(state, model_id, revision, yes)
            return
        _confirm(f"delete {_summary(plan)}?", yes)
        done = client.request("DELETE", path, params=params) or {}
    finally:
        client.close()
    typer.echo(f"deleted {_summary(done)}")


def _delete_without_daemon(
    state: CliContext, model_id: str, revision: str | None, yes: bool
) -> None:
    typer.echo(
        f"warning: the daemon is not reachable; deleting {model_id} without checking whether"
        " a desired engine uses it (--force)",
        err=True,
    )
    plan = plan_delete(local_catalog(state), model_id, revision, None)
    _confirm(f"delete {_summary(plan.to_dict())}?", yes)
    try:
        plan.execute()
    except OSError as exc:
        raise SagellmError(f"deleting {model_id} failed part-way: {exc}") from exc
    typer.echo(f"deleted {_summary(plan.to_dict())}")
