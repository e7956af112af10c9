"""Owns the tests of sagellmd/api/port_checks.py: fixed ports someone already holds."""

from __future__ import annotations

import pytest

from sagellmd.api.port_checks import check_fixed_ports
from sagellmd.errors import ConflictError
from sagellmd.instance import Instance, InstanceState, Retiring
from sagellmd.spec import parse_engine

API_PORT = 8765


def spec(port: int | None, name: str = "new") -> object:
    return parse_engine({"name": name, "model": "m", "port": port})


def running(engine_id: str, port: int, state: InstanceState = InstanceState.READY) -> Instance:
    return Instance(engine_id, 1, "h", state, port=port, pid=100)


def test_the_api_port_is_refused():
    with pytest.raises(ConflictError, match="port 8765 is the daemon's own API port"):
        check_fixed_ports({"new": spec(API_PORT)}, API_PORT, {}, set())


def test_the_gateway_port_is_refused_while_the_gateway_is_enabled():
    with pytest.raises(ConflictError, match="port 8000 is the gateway's port") as caught:
        check_fixed_ports({"new": spec(8000)}, API_PORT, {}, set(), gateway_port=8000)
    assert caught.value.details["holder"] == "gateway"
    check_fixed_ports({"new": spec(8000)}, API_PORT, {}, set(), gateway_port=None)


def test_an_automatic_port_in_use_is_refused_naming_its_engine():
    instances = {"a": running("a", 20001)}
    with pytest.raises(ConflictError) as caught:
        check_fixed_ports({"new": spec(20001)}, API_PORT, instances, {"a"})
    assert "new.port: port 20001 is in use by engine 'a'" in caught.value.message
    assert caught.value.details["engine"] == "a"


@pytest.mark.parametrize(
    "state", [InstanceState.STARTING, InstanceState.UNHEALTHY, InstanceState.BACKOFF]
)
def test_a_port_an_engine_will_restart_on_counts_too(state):
    with pytest.raises(ConflictError):
        check_fixed_ports({"new": spec(20001)}, API_PORT, {"a": running("a", 20001, state)}, {"a"})


def test_a_retiring_process_holds_its_port():
    retiring = Retiring(pid=7, create_time=1.0, port=20002, spec_hash="old")
    instances = {"a": Instance("a", 1, "h", InstanceState.STARTING, port=20003, retiring=retiring)}
    with pytest.raises(ConflictError, match="engine 'a'"):
        check_fixed_ports({"new": spec(20002)}, API_PORT, instances, {"a"})


@pytest.mark.parametrize(
    ("instances", "automatic", "leaving", "specs"),
    [
        # a stopped engine holds nothing
        ({"a": running("a", 20001, InstanceState.STOPPED)}, {"a"}, set(), {"new": spec(20001)}),
        # an engine no longer declared is on its way out
        ({"a": running("a", 20001)}, set(), set(), {"new": spec(20001)}),
        # the change removes the holder
        ({"a": running("a", 20001)}, {"a"}, {"a"}, {"new": spec(20001)}),
        # the holder itself takes its port as a fixed one
        ({"a": running("a", 20001)}, {"a"}, set(), {"a": spec(20001, "a")}),
        # the holder moves to another fixed port in the same change
        ({"a": running("a", 20001)}, {"a"}, set(), {"a": spec(20005, "a"), "b": spec(20001, "b")}),
        # automatic specs claim nothing
        ({"a": running("a", 20001)}, {"a"}, set(), {"new": spec(None)}),
    ],
)
def test_ports_that_are_free_to_take(instances, automatic, leaving, specs):
    check_fixed_ports(specs, API_PORT, instances, automatic, leaving)
