"""Daemon start: adopt the engines that outlived the previous daemon, stop strays."""

from __future__ import annotations

import logging
import os
import signal

import psutil

from sagellmd.instance import PROCESS_STATES, InstanceState, retired, retiring_key, spawned
from sagellmd.reconcile.observe import Prober, on_exit
from sagellmd.reconcile.world import World
from sagellmd.runtime.process import signal_group

log = logging.getLogger(__name__)


def _marked_processes(home: str) -> list[tuple[int, int, str]]:
    """(pid, pgid, engine id) of every live process carrying this home's engine marker."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            pgid = os.getpgid(process.pid)
            env = process.environ()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if env.get("SAGELLM_HOME") == home and env.get("SAGELLM_ENGINE_ID"):
            found.append((process.pid, pgid, env["SAGELLM_ENGINE_ID"]))
    return found


def _kill_leaderless_groups(world: World, marked: list[tuple[int, int, str]]) -> None:
    """Workers whose engine process died while no daemon watched: they hold GPU memory."""
    leaders = {pid for pid, pgid, _ in marked if pid == pgid}
    for pgid, engine_id in {(pgid, engine) for _, pgid, engine in marked}:
        if pgid in leaders:
            continue
        log.warning(
            "engine=%s pgid=%s workers outlived their engine: killing them", engine_id, pgid
        )
        world.event(engine_id, "stopped", f"workers of dead pid {pgid} outlived it: killed")
        signal_group(pgid, signal.SIGKILL)


def recover(world: World, prober: Prober) -> None:
    """Make the in-memory world match the machine before the first reconcile pass."""
    world.instances.update(world.store.instances())
    desired = {engine.id for engine in world.store.desired()}
    adopted: set[int] = set()
    for engine_id, instance in list(world.instances.items()):
        old = instance.retiring
        if old is None:
            continue
        if world.watcher.adopt(engine_id, old.pid, old.create_time) is not None:
            # adopt() checks the marker against the engine id; then it watches it aside.
            world.watcher.rekey(engine_id, retiring_key(engine_id))
            adopted.add(old.pid)
        else:
            world.record(retired(instance, "ended while the daemon was not running"))
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
    marked = _marked_processes(str(world.settings.home))
    _kill_leaderless_groups(world, marked)
    for pid, engine_id in [(pid, engine) for pid, pgid, engine in marked if pid == pgid]:
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
