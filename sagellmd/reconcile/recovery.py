"""Daemon start: adopt the engines that outlived the previous daemon, stop strays."""

from __future__ import annotations

import logging
import signal

import psutil

from sagellmd.instance import PROCESS_STATES, InstanceState, retired, retiring_key, spawned
from sagellmd.reconcile.observe import Prober, on_exit
from sagellmd.reconcile.world import World
from sagellmd.runtime.process import MarkedProcess, marked_processes, signal_group

log = logging.getLogger(__name__)


def _kill_leaderless_groups(world: World, marked: list[MarkedProcess], live_runs: set[str]) -> None:
    """Workers whose engine process died while no daemon watched: they hold GPU memory."""
    leaders = {entry.pid for entry in marked if entry.pid == entry.pgid}
    groups = {
        (entry.pgid, entry.engine_id)
        for entry in marked
        if entry.pgid not in leaders and entry.run not in live_runs
    }
    for pgid, engine_id in groups:
        log.warning(
            "engine=%s pgid=%s workers outlived their engine: killing them", engine_id, pgid
        )
        world.event(engine_id, "stopped", f"workers of dead pid {pgid} outlived it: killed")
        signal_group(pgid, signal.SIGKILL)


def _live_runs(world: World) -> set[str]:
    """Run markers of the processes adopted so far: their setsid children are no strays."""
    runs = set()
    for key in world.watcher.engine_ids():
        process = world.watcher.get(key)
        if process is not None and process.markers is not None and process.markers.run:
            runs.add(process.markers.run)
    return runs


def recover(world: World, prober: Prober) -> None:
    """Make the in-memory world match the machine before the first reconcile pass."""
    world.instances.update(world.store.instances())
    adopted = _adopt_retiring(world) | _adopt_recorded(world, prober)
    marked = marked_processes(str(world.settings.home))
    _kill_leaderless_groups(world, marked, _live_runs(world))
    _adopt_or_kill_strays(world, prober, marked, adopted)
    _end_intents_without_process(world)


def _adopt_retiring(world: World) -> set[int]:
    """Watch again the previous processes of surges; record the end of those gone."""
    adopted: set[int] = set()
    for engine_id, instance in list(world.instances.items()):
        old = instance.retiring
        if old is None or old.node is not None:
            continue  # none, or another node's agent watches it (cluster_recovery.py)
        if world.watcher.adopt(engine_id, old.pid, old.create_time) is not None:
            # adopt() checks the marker against the engine id; then it watches it aside.
            world.watcher.rekey(engine_id, retiring_key(engine_id))
            adopted.add(old.pid)
        else:
            world.record(retired(instance, "ended while the daemon was not running"))
    return adopted


def _adopt_recorded(world: World, prober: Prober) -> set[int]:
    """Watch again every engine process on record; an exit for those that ended meanwhile."""
    adopted: set[int] = set()
    for engine_id, instance in list(world.instances.items()):
        if (instance.state not in PROCESS_STATES and not instance.asleep) or instance.pid is None:
            continue
        if instance.node is not None:
            continue  # another node's agent watches it (cluster_recovery.py)
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
            # (A sleep the previous daemon asked for is not awaited: stopped, it is idle too.)
            world.watcher.stop(engine_id, world.settings.stop_grace_s)
        elif instance.asleep:
            pass  # asleep it stays, with no probe, until demand wakes it
        else:
            prober.start(engine_id, instance.pid)
    return adopted


def _adopt_or_kill_strays(
    world: World, prober: Prober, marked: list[MarkedProcess], adopted: set[int]
) -> None:
    """Group leaders of this home that no record names: the process of a start whose pid
    was never written is adopted; any other is killed."""
    desired = {engine.id for engine in world.desired()}
    # Oldest first: of a run's group leaders (the engine, and children that called
    # setsid), the engine itself was started first.
    for entry in [entry for entry in marked if entry.pid == entry.pgid]:
        pid, engine_id = entry.pid, entry.engine_id
        if pid in adopted or (entry.run is not None and entry.run in _live_runs(world)):
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


def _end_intents_without_process(world: World) -> None:
    """A start intent with no process: the spawn never happened, so it ends as an exit."""
    for engine_id, instance in list(world.instances.items()):
        if instance.state is InstanceState.STARTING and instance.pid is None:
            on_exit(world, engine_id, None, None, None)
