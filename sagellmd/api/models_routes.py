"""Local models over the API: list, download in the background, delete."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.api.body import query_bool, read_json
from sagellmd.api.context import ApiContext
from sagellmd.errors import BadInputError
from sagellmd.gpu.estimate import EstimateSettings
from sagellmd.models.catalog import Catalog, scan_catalog
from sagellmd.models.delete import plan_delete
from sagellmd.models.download import offline_copy, validate_model_id, validate_patterns
from sagellmd.models.jobs import DownloadJobs
from sagellmd.models.resolve import hub_cache_for, is_offline
from sagellmd.schemas.requests import DOWNLOAD_BODY
from sagellmd.schemas.validator import is_valid

EVENT_DOWNLOAD = "model_download"
EVENT_DELETED = "model_deleted"


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def _record(ctx: ApiContext, type_: str, message: str) -> None:
    ctx.store.add_event(None, type_, message, ctx.store.current_generation())
    ctx.hub.notify()


def _jobs(request: Request) -> DownloadJobs:
    """The app's download registry, made on first use (it needs the running loop)."""
    jobs = getattr(request.app.state, "model_downloads", None)
    if jobs is None:
        ctx = _ctx(request)
        loop = asyncio.get_running_loop()

        def report(message: str) -> None:
            # Called from download threads: the store and the hub belong to the loop.
            loop.call_soon_threadsafe(_record, ctx, EVENT_DOWNLOAD, message)

        jobs = DownloadJobs(report)
        request.app.state.model_downloads = jobs
    return jobs


def _engines(ctx: ApiContext) -> list[tuple[str, str]]:
    return [(engine.id, engine.spec.model) for engine in ctx.store.desired()]


async def _catalog(ctx: ApiContext) -> Catalog:
    settings = ctx.settings
    return await run_in_threadpool(
        scan_catalog,
        settings.model_paths,
        hub_cache_for(os.environ),
        settings.home,
        EstimateSettings(settings.kv_cache_gb, settings.overhead_gb, settings.model_paths),
    )


async def list_local(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    catalog = await _catalog(ctx)
    document = catalog.to_dict(_engines(ctx))
    document["downloads"] = [job.to_dict() for job in _jobs(request).list()]
    return JSONResponse(document)


def _download_request(body: Any) -> tuple[str, str | None, list[str] | None]:
    if not isinstance(body, dict):
        raise BadInputError('body: must be a JSON object like {"id": "org/name"}')
    fields = DOWNLOAD_BODY["properties"]
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadInputError(
            f"body: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    revision = body.get("revision")
    if not is_valid(fields["revision"], revision):
        raise BadInputError(f"revision: must be a branch, tag or commit hash, got {revision!r}")
    return (
        validate_model_id(body.get("id")),
        revision,
        validate_patterns(body.get("allow_patterns")),
    )


async def download(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    model_id, revision, patterns = _download_request(await read_json(request))
    if is_offline(os.environ):
        # Answer now rather than with a failure event: nothing can be fetched, only found.
        await run_in_threadpool(
            offline_copy, model_id, revision, patterns, hub_cache_for(os.environ)
        )
    # Taken before the start so the cursor comes before the job's first event.
    after = ctx.store.last_event_id()
    job = _jobs(request).start(model_id, revision, patterns)
    return JSONResponse(
        {"download": job.to_dict(), "last_event_id": after, "events": f"/v1/events?after={after}"},
        status_code=202,
    )


async def delete_local(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    model_id = validate_model_id(request.path_params["model_id"])
    revision = request.query_params.get("revision") or None
    catalog = await _catalog(ctx)
    plan = await run_in_threadpool(plan_delete, catalog, model_id, revision, _engines(ctx))
    if query_bool(request, "dry_run", False):
        return JSONResponse({**plan.to_dict(), "dry_run": True})
    # The in-use check ran just above on this loop; engines added meanwhile would be a race
    # of milliseconds, and they would fail to start with a clear message anyway.
    await run_in_threadpool(plan.execute)
    answer = plan.to_dict()
    _record(
        ctx,
        EVENT_DELETED,
        f"{model_id}: deleted {len(plan.revisions)} revision(s) from {plan.cache},"
        f" {answer['freed_gb']:g} GiB freed",
    )
    return JSONResponse(answer)
