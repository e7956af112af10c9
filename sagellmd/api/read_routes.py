"""Read-only endpoints: liveness, status, engines, logs, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sagellmd import __version__
from sagellmd.api.body import query_parameter
from sagellmd.api.context import ApiContext
from sagellmd.api.gateway_routes import gateway_section
from sagellmd.api.gpu_views import gpus_document
from sagellmd.api.log_follow import follow_log, remote_log
from sagellmd.api.node_views import nodes_document
from sagellmd.api.secrets import shows_secrets
from sagellmd.api.views import engine_entries, engine_entry
from sagellmd.desired import DesiredEngine
from sagellmd.disaggregated_block import group_of
from sagellmd.errors import NotFoundError
from sagellmd.pd_expand import expand_desired
from sagellmd.reconcile.world import World
from sagellmd.runtime.kinds import wants_gpu
from sagellmd.runtime.logs import log_path, read_tail
from sagellmd.spec import GATEWAY_ENGINE_ID
from sagellmd.store.timestamps import iso


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def _own_gpus(world: World) -> dict[str, Any]:
    """The daemon's machine's GPUs with the reservations of the engines running there."""
    here = {key: instance for key, instance in world.instances.items() if instance.node is None}
    return gpus_document(world.inventory, world.gpu_view, here)


def gpu_summary(ctx: ApiContext) -> dict[str, Any]:
    """The daemon's machine's GPUs; on a cluster every node's, each naming its node."""
    world = ctx.reconciler.world
    host = world.cluster
    document = _own_gpus(world)
    if host is None:
        return document
    for device in document["devices"]:
        device["node"] = host.local_name
    for node in nodes_document(host, world.gpu_view, world.instances, []):
        if not node["local"]:
            document["devices"] += [{**device, "node": node["name"]} for device in node["gpus"]]
    return document


def nodes_summary(ctx: ApiContext) -> list[dict[str, Any]]:
    """The cluster's nodes; none (and nothing read) without a cluster."""
    world = ctx.reconciler.world
    if world.cluster is None:
        return []
    devices = _own_gpus(world)["devices"]
    return nodes_document(world.cluster, world.gpu_view, world.instances, devices)


async def nodes(request: Request) -> JSONResponse:
    """`GET /v1/nodes`: the cluster's nodes (empty, `cluster` null, without `cluster:`)."""
    ctx = _ctx(request)
    host = ctx.reconciler.world.cluster
    cluster = None
    if host is not None:
        cluster = {"address": host.settings.address, "namespace": host.settings.namespace}
    return JSONResponse({"cluster": cluster, "nodes": nodes_summary(ctx)})


def estimates_for(ctx: ApiContext, desired: list[DesiredEngine]) -> dict[str, Any]:
    """Each engine's memory estimate (a disaggregated engine's: each instance's)."""
    return {
        e.id: ctx.reconciler.estimates.get(e) for e in expand_desired(desired) if wants_gpu(e.spec)
    }


async def metrics(request: Request) -> Response:
    ctx = _ctx(request)
    body = generate_latest(ctx.reconciler.world.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "pid": os.getpid(), "version": __version__})


async def status(request: Request) -> Response:
    ctx = _ctx(request)
    secrets = shows_secrets(request)
    # A gateway report changes the inflight/queued columns without any event.
    state = (ctx.hub.version, ctx.reconciler.passes, ctx.gateway_activity.version)
    body = ctx.status_documents.get(state, secrets, lambda: status_document(ctx, secrets))
    return Response(body, media_type="application/json")


def status_document(ctx: ApiContext, secrets: bool) -> dict[str, Any]:
    """`GET /v1/status`: generation, daemon, GPUs, presets and every engine."""
    desired = ctx.store.desired()
    return {
        "generation": ctx.store.current_generation(),
        "daemon": {
            "pid": os.getpid(),
            "version": __version__,
            "home": str(ctx.settings.home),
            "api": ctx.settings.api_url,
            "started_at": iso(ctx.started_at),
            "reconcile_passes": ctx.reconciler.passes,
            "last_pass_at": iso(ctx.reconciler.last_pass_at),
        },
        "gpus": gpu_summary(ctx),
        "nodes": nodes_summary(ctx),
        "presets": [preset.name for preset in ctx.store.active_presets()],
        "engines": with_load(
            engine_entries(desired, ctx.engine_instances(), estimates_for(ctx, desired), secrets),
            ctx.gateway_activity.load(),
        ),
        "gateway": gateway_section(ctx),
    }


def with_load(
    entries: list[dict[str, Any]], load: Mapping[str, Mapping[str, int]] | None
) -> list[dict[str, Any]]:
    """Each engine's inflight and queued from a fresh gateway report (null without one; an
    engine the report does not name has nothing in flight)."""
    for entry in entries:
        counts = load.get(entry["id"], {}) if load is not None else None
        entry["inflight"] = counts.get("inflight", 0) if counts is not None else None
        entry["queued"] = counts.get("queued", 0) if counts is not None else None
        if "instances" in entry:
            # A disaggregated engine has what its instances have.
            with_load(entry["instances"], load)
            for key in ("inflight", "queued"):
                if load is not None:
                    entry[key] += sum(member[key] for member in entry["instances"])
    return entries


async def list_engines(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    desired = ctx.store.desired()
    return JSONResponse(
        {
            "engines": engine_entries(
                desired,
                ctx.engine_instances(),
                estimates_for(ctx, desired),
                shows_secrets(request),
            )
        }
    )


def find_engine(ctx: ApiContext, engine_id: str, secrets: bool = False) -> dict[str, object]:
    """One engine: a declared one, an instance of a disaggregated one, or one being removed."""
    desired = ctx.store.desired_engine(engine_id)
    if desired is None and group_of(engine_id) is not None:
        # Not a stored row: the loop's expansion of the engine it belongs to.
        desired = ctx.reconciler.world.desired_engine(engine_id)
    instances = ctx.engine_instances()
    instance = instances.get(engine_id)
    if desired is None and instance is None:
        raise NotFoundError(f"no engine {engine_id!r}; `sagellm engine list` shows the engines")
    estimates = estimates_for(ctx, [desired]) if desired else {}
    return engine_entry(
        engine_id, desired, instance, estimates.get(engine_id), secrets, instances, estimates
    )


async def get_engine(request: Request) -> JSONResponse:
    engine_id = request.path_params["engine_id"]
    return JSONResponse(find_engine(_ctx(request), engine_id, shows_secrets(request)))


async def engine_logs(request: Request) -> JSONResponse:
    """The log's tail (`?tail=N`), or with `?after=OFFSET&wait=S` the lines written after
    byte OFFSET, long-polled; every answer's `offset` is where to continue."""
    ctx = _ctx(request)
    engine_id = request.path_params["engine_id"]
    if engine_id != GATEWAY_ENGINE_ID:  # the gateway has a log too, though it is no engine
        find_engine(ctx, engine_id)
    tail = int(query_parameter(request, "tail", 100) or 0)
    after = query_parameter(request, "after", None)
    wait = float(query_parameter(request, "wait", 0) or 0)
    path = log_path(ctx.settings.logs_dir, engine_id)
    instance = ctx.reconciler.world.instances.get(engine_id)
    node = instance.node if instance is not None else None
    agent = ctx.reconciler.world.agent_of(node)
    if agent is not None:
        # On another node the log is that node's file: its agent reads it.
        return JSONResponse(await remote_log(request, ctx.hub, agent, engine_id, tail, after, wait))
    if after is not None:
        chunk = await follow_log(request, ctx.hub, path, int(after), wait)
        return JSONResponse(
            {
                "engine": engine_id,
                "path": str(path),
                "lines": chunk.lines,
                "offset": chunk.offset,
                "reset": chunk.reset,
            }
        )
    # A thread, not the event loop: a log is as big as the engine made it, and the loop
    # also serves /healthz and runs the reconcile passes.
    found = await asyncio.to_thread(read_tail, path, tail)
    body: dict[str, Any] = {
        "engine": engine_id,
        "path": str(path),
        "lines": found.lines,
        "truncated": found.truncated,
        "max_bytes": found.max_bytes,
        "offset": found.size,
    }
    if found.truncated:
        body["message"] = (
            f"cut to the last {found.max_bytes} bytes of the log (fewer lines than asked"
            f" for, or one line cut at its start); read {path} for the rest"
        )
    return JSONResponse(body)


async def gpus(request: Request) -> JSONResponse:
    return JSONResponse(gpu_summary(_ctx(request)))
