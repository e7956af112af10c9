"""The level-triggered reconcile loop: wake, read everything, plan, execute, set timers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sagellmd.backoff import BackoffPolicy
from sagellmd.cluster.host import ClusterHost
from sagellmd.cluster.watcher import ClusterWatcher
from sagellmd.config import Settings
from sagellmd.desired import DesiredEngine
from sagellmd.events import EventHub
from sagellmd.gpu.accounting import EstimateCache, build_view, gpu_needs, process_tree
from sagellmd.gpu.estimate import EstimateSettings
from sagellmd.gpu.inventory import read_inventory
from sagellmd.gpu.placement import GpuView
from sagellmd.instance import PROCESS_STATES, InstanceState, StopIntent
from sagellmd.pd_expand import expand_desired
from sagellmd.reconcile.actions import Pend, Plan, Stop, Wait
from sagellmd.reconcile.cluster_recovery import adopt_from_new_agent, recover_remote
from sagellmd.reconcile.cluster_world import cluster_view, in_view_numbering, lose_node
from sagellmd.reconcile.demand import Activity
from sagellmd.reconcile.executor import Executor
from sagellmd.reconcile.gateway_engine import daemon_engines
from sagellmd.reconcile.observe import Prober, on_exit
from sagellmd.reconcile.plan import plan_actions
from sagellmd.reconcile.recovery import recover
from sagellmd.reconcile.review import RolloutOutcome, next_deadline, review
from sagellmd.reconcile.schedule import RestartSchedule
from sagellmd.reconcile.world import World
from sagellmd.runtime.process import ProcessWatcher
from sagellmd.store.failures import is_storage_failure
from sagellmd.store.repository import Store

log = logging.getLogger(__name__)

PENDING_RECHECK_S = 5.0
# A failed pass (a full disk, a broken database) is retried this soon, doubling to the cap.
PASS_RETRY_BASE_S = 0.5
PASS_RETRY_MAX_S = 4.0


class Reconciler:
    """Owns the loop; everything else wakes it rather than acting on the world itself."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        hub: EventHub,
        clock: Callable[[], float] = time.time,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        watcher = (
            ClusterWatcher(loop, self._on_exit)
            if settings.cluster is not None
            else ProcessWatcher(loop, self._on_exit)
        )
        self.world = World(
            settings=settings,
            store=store,
            hub=hub,
            watcher=watcher,
            clock=clock,
            wake=self.wake,
            own_engines=daemon_engines(settings),
        )
        if isinstance(watcher, ClusterWatcher):
            host = ClusterHost(settings, watcher, self.wake, clock)
            host.on_node_lost = self._node_lost
            host.on_agent_started = lambda node: adopt_from_new_agent(
                self.world, self._prober, host, node
            )
            host.on_event = lambda type_, message: self.world.event(None, type_, message)
            self.world.cluster = host
        self.world.metrics.watch(self.world)
        self._prober = Prober(self.world)
        self._executor = Executor(self.world, self._prober)
        self.estimates = EstimateCache(
            EstimateSettings(settings.kv_cache_gb, settings.overhead_gb, settings.model_paths)
        )
        self._scheduler = AsyncIOScheduler(event_loop=loop)
        self._restart_schedule = RestartSchedule(self._scheduler, self.world)
        self._stopping = False
        self._heartbeat: Callable[[], object] | None = None
        self._heartbeat_interval_s: float | None = None
        self.passes = 0
        self._failed_passes = 0
        self.last_pass_at: float | None = None

    def _on_exit(self, engine_id: str, pid: int, code: int | None, signum: int | None) -> None:
        on_exit(self.world, engine_id, pid, code, signum)

    def set_heartbeat(self, beat: Callable[[], object], interval_s: float) -> None:
        """Call `beat` after every pass, and pass at least every `interval_s` seconds."""
        self._heartbeat = beat
        self._heartbeat_interval_s = interval_s

    def wake(self) -> None:
        self._wake_event.set()

    async def _timer_fired(self) -> None:
        self.wake()

    def _node_lost(self, node: str, why: str) -> None:
        lose_node(self.world, self._prober, node, why)

    def recover(self) -> None:
        """Adopt what outlived the previous daemon; on a cluster, join it first (a cluster
        that cannot be reached stops the start: ClusterUnreachable)."""
        host = self.world.cluster
        if host is not None:
            host.connect()
        recover(self.world, self._prober)
        if host is not None:
            recover_remote(self.world, self._prober, host)
        self.observe_gpus(self.world.desired())

    def observe_gpus(self, desired: list[DesiredEngine]) -> GpuView:
        """Read the GPU inventory and turn it into what placement sees, for this pass."""
        world = self.world
        setting = world.settings.gpus
        if world.cluster is not None:
            setting = world.cluster.local_gpu_setting(setting)
        world.inventory = read_inventory(setting)
        ours = (
            process_tree(
                instance.pid
                for instance in world.instances.values()
                if instance.pid is not None and instance.node is None
            )
            if world.inventory.devices and not world.inventory.simulated
            else set()
        )
        if world.cluster is not None:
            world.gpu_view = cluster_view(world, world.cluster, desired, self.estimates, ours)
            return world.gpu_view
        world.gpu_view = build_view(
            world.inventory, desired, self.estimates, ours, world.settings.headroom
        )
        return world.gpu_view

    def _plan(self, desired: list[DesiredEngine], view: GpuView) -> Plan:
        settings = self.world.settings
        host = self.world.cluster
        observed = (
            in_view_numbering(self.world.instances, view, host.local_name)
            if host is not None
            else self.world.instances
        )
        return plan_actions(
            desired,
            observed,
            self.world.clock(),
            BackoffPolicy(settings.backoff_base_s, settings.backoff_max_s),
            view,
            self.activity(),
        )

    def activity(self) -> Activity | None:
        """The gateway's last report if it is fresh, as the planner reads it."""
        report = self.world.activity()
        return Activity.from_report(report) if report is not None else None

    def plan_for(self, desired: list[DesiredEngine]) -> Plan:
        """What a pass would do for this desired set (no inventory read: the last one stands),
        without the actions on the daemon's own engines (the gateway)."""
        # A dry run passes the stored engines: disaggregated ones become their instances.
        desired = [e for e in expand_desired(desired) if e.id not in self.world.own_engines]
        desired += list(self.world.own_engines.values())
        needs = gpu_needs(desired, self.estimates)
        plan = self._plan(desired, dataclasses.replace(self.world.gpu_view, needs=needs))
        # Answers about the user's desired state: the daemon's own engines are not part of it.
        own = self.world.own_engines
        return Plan(tuple(action for action in plan.actions if action.engine_id not in own))

    def current_plan(self) -> Plan:
        return self.plan_for(self.world.desired())

    def reconcile_once(self) -> Plan:
        """One pass; running it again with nothing changed does nothing more."""
        with self.world.metrics.pass_duration.time():
            return self._reconcile_once()

    def _reconcile_once(self) -> Plan:
        self.world.flush_unsaved()  # what a full disk kept from being recorded, in order
        desired_list = self.world.desired()
        desired = {engine.id: engine for engine in desired_list}
        plan = self._plan(desired_list, self.observe_gpus(desired_list))
        self._restart_schedule.sync(desired_list)
        generation = self.world.store.current_generation()
        before = dict(self.world.instances)
        for action in plan.actions:
            if isinstance(action, Wait):
                self._wake_at(action.engine_id, action.until)
                continue
            try:
                self._executor.execute(action, desired, generation)
            except Exception as exc:
                if is_storage_failure(exc):
                    raise  # the whole pass is retried soon (run), not at the next tick
                log.exception("engine=%s action=%s failed", action.engine_id, action.action)
        if self.world.instances != before:
            # Acting changed the world (a start sets a deadline, a stop frees a
            # port): plan again at once rather than waiting for the next wake.
            self.wake()
        elif any(isinstance(action, Pend) for action in plan.actions):
            # Waiting for GPU memory: memory held by other processes can go away
            # without any event of ours, so look again soon.
            self._wake_at("pending-gpu", self.world.clock() + PENDING_RECHECK_S)
        self.passes += 1
        self.last_pass_at = self.world.clock()
        return plan

    def watch_rollout(self) -> list[RolloutOutcome]:
        """Judge the open generations change by change; revert a failed one's own changes."""
        world = self.world
        outcomes = review(world.store, world.instances, world.clock(), world.settings.min_healthy_s)
        for outcome in outcomes:
            self._report(outcome)
        deadline = next_deadline(outcomes)
        if deadline is not None:
            self._wake_at("rollout", deadline)
        if any(outcome.reverted_by is not None for outcome in outcomes):
            self.wake()
        return outcomes

    def _report(self, outcome: RolloutOutcome) -> None:
        world, verdict, number = self.world, outcome.verdict, outcome.generation
        if not verdict.settled:
            return
        if verdict.healthy is None:
            world.event(None, "rollout", f"generation {number}: {verdict.reason}")
            return
        if verdict.healthy:
            world.event(None, "rollout", f"generation {number} is healthy: {verdict.reason}")
            return
        world.event(verdict.engine, "rollout", f"generation {number} failed: {verdict.reason}")
        if outcome.kept:
            world.event(None, "rollout", f"generation {number} kept as it is (rollback off)")
        elif outcome.reverted_by is not None:
            engines = ", ".join(outcome.reverted) or "nothing"
            world.event(
                None,
                "rollback",
                f"generation {outcome.reverted_by} reverts what generation {number} changed:"
                f" {engines} as before it",
            )

    def _wake_at(self, engine_id: str, until: float) -> None:
        self._scheduler.add_job(
            self._timer_fired,
            "date",
            run_date=datetime.fromtimestamp(until),
            id=f"wake:{engine_id}",
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def run(self) -> None:
        """Run passes until `shutdown`; a slow tick is the safety net for missed wakes."""
        self._scheduler.start()
        if self.world.cluster is not None:
            self.world.cluster.start()
        self._scheduler.add_job(
            self._timer_fired, "interval", seconds=self.world.settings.tick_s, id="tick"
        )
        if self._heartbeat_interval_s:
            self._scheduler.add_job(
                self._timer_fired, "interval", seconds=self._heartbeat_interval_s, id="heartbeat"
            )
        self.wake()
        while not self._stopping:
            await self._wake_event.wait()
            self._wake_event.clear()
            if self._stopping:
                break
            try:
                self.reconcile_once()
            except Exception as exc:
                self._pass_failed(exc)
                continue
            self._failed_passes = 0
            try:
                self.watch_rollout()
            except Exception:
                log.exception("rollout check failed")
            if self._heartbeat is not None:
                # Only a pass that completed proves the loop is alive (systemd watchdog).
                self._heartbeat()

    def _pass_failed(self, exc: Exception) -> None:
        """Retry a failed pass in 0.5 s, doubling to 4 s, rather than at the next tick."""
        self._failed_passes += 1
        doublings = min(self._failed_passes - 1, 16)
        delay = min(PASS_RETRY_BASE_S * 2**doublings, PASS_RETRY_MAX_S)
        if is_storage_failure(exc):
            log.error("reconcile pass failed, retry in %gs: %s", delay, exc)
            if self._heartbeat is not None:
                # The loop is alive, the disk is not: a watchdog restart would not help.
                self._heartbeat()
        else:
            log.exception("reconcile pass failed, retry in %gs", delay)
        self._wake_at("retry-pass", self.world.clock() + delay)

    async def shutdown(self, stop_engines: bool, timeout_s: float = 4.0) -> None:
        """Stop the loop; leave the engines running unless asked to stop them."""
        self._stopping = True
        self.wake()
        self._scheduler.shutdown(wait=False)
        if stop_engines:
            for engine_id, instance in list(self.world.instances.items()):
                running = instance.state in PROCESS_STATES or instance.asleep
                if running and engine_id in self.world.watcher:
                    self._executor.execute(
                        Stop(engine_id, "daemon stopping", StopIntent.DELIBERATE), {}, 0
                    )
            deadline = time.monotonic() + timeout_s
            while self.world.watcher.engine_ids() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for engine_id in self.world.watcher.engine_ids():
                self.world.watcher.kill(engine_id)
            # Stopped by the daemon, not by the user: the next start begins afresh.
            for engine_id, instance in list(self.world.instances.items()):
                if instance.state is InstanceState.STOPPED:
                    self.world.forget(engine_id)
        self._prober.cancel_all()
        self._executor.sleep_mode.cancel_all()
        self.world.watcher.release_all()
        if self.world.cluster is not None:
            self.world.cluster.shutdown()
