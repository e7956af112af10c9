"""Daemon start: adopt the engines that outlived the previous daemon, stop strays."""

from __future__ import annotations

import logging
import os
import signal

import psutil

from sagellmd.instance import PROCESS_STATES, InstanceState, spawned
from sagellmd.reconcile.observe import Prober, on_exit
from sagellmd.reconcile.world import World
from sagellmd.runtime.process import signal_group

log = logging.getLogger(__name__)


def _marked_leaders(home: str) -> dict[int, str]:
    """Process-group leaders that carry this home's engine marker: pid -> engine id."""
    found: dict[int, str] = {}
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) != process.pid:
                continue  # a worker of an engine, not the engine itself
            env = process.environ()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if env.get("SAGELLM_HOME") == home and env.get("SAGELLM_ENGINE_ID"):
            found[process.pid] = env["SAGELLM_ENGINE_ID"]
    return found


def recover(world: World, prober: Prober) -> None:
    """Make the in-memory world match the machine before the first reconcile pass."""
    world.instances.update(world.store.instances())
    desired = {engine.id for engine in world.store.desired()}
    adopted: set[int] = set()
    for engine_id, instance in list(world.instances.items()):
        if instance.state not in PROCESS_STATES or instance.pid is None:
            continue
        process = world.watcher.adopt(engine_id, instance.pid, instance.create_time or 0.0)
        if process is None:
            world.event(
                engine_id, "exited", f"pid {instance.pid} ended while the daemon was not running"
            )
            on_exit(world, engine_id, instance.pid, None, None)
            continue
        adopted.add(instance.pid)
        world.event(engine_id, "adopted", f"pid {instance.pid} kept running; watching it again")
        if instance.state is InstanceState.STOPPING:
            world.watcher.stop(engine_id, world.settings.stop_grace_s)
        else:
            prober.start(engine_id, instance.pid)
    for pid, engine_id in _marked_leaders(str(world.settings.home)).items():
        if pid in adopted:
            continue
        instance = world.instances.get(engine_id)
        # The daemon died between spawning this process and recording its pid.
        orphan_of_intent = (
            instance is not None
            and engine_id in desired
            and instance.pid is None
            and instance.state is InstanceState.STARTING
        )
        create_time = psutil.Process(pid).create_time() if psutil.pid_exists(pid) else None
        if (
            orphan_of_intent
            and create_time is not None
            and world.watcher.adopt(engine_id, pid, create_time) is not None
        ):
            world.record(spawned(instance, pid, create_time))
            world.event(engine_id, "adopted", f"pid {pid} was started just before the daemon died")
            prober.start(engine_id, pid)
            adopted.add(pid)
            continue
        log.warning("engine=%s pid=%s stray process of this home: stopping it", engine_id, pid)
        world.event(engine_id, "stopped", f"stray pid {pid} (no record of it): killed")
        signal_group(pid, signal.SIGKILL)
    for engine_id, instance in list(world.instances.items()):
        if instance.state is InstanceState.STARTING and instance.pid is None:
            # Intent without a process: the spawn never happened.
            on_exit(world, engine_id, None, None, None)
