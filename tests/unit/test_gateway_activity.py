"""Owns the tests of sagellmd/api/gateway_activity.py: the last report, and when it is stale."""

from __future__ import annotations

from sagellmd.api.gateway_activity import GatewayActivity


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_report_means_no_load():
    activity = GatewayActivity(clock=Clock())
    assert activity.load() is None and activity.totals is None and activity.version == 0


def test_a_fresh_report_gives_each_engine_its_counts_until_it_is_stale():
    clock = Clock()
    activity = GatewayActivity(clock=clock, fresh_for_s=10)
    activity.receive(
        {"engines": {"a": {"inflight": 3, "queued": 1}, "b": {"requests": 5}}, "totals": {"x": 1}}
    )
    assert activity.version == 1 and activity.received_at == 100.0
    assert activity.load() == {"a": {"inflight": 3, "queued": 1}, "b": {"inflight": 0, "queued": 0}}
    clock.now = 110.0
    assert activity.load() is not None
    clock.now = 110.5
    assert activity.load() is None
    assert activity.totals == {"x": 1}  # the last totals stay, with their time


def test_each_report_replaces_the_last():
    activity = GatewayActivity(clock=Clock())
    activity.receive({"engines": {"a": {"inflight": 1}}})
    activity.receive({"engines": {}})
    assert activity.load() == {} and activity.version == 2
