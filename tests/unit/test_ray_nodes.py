"""Owns the pure part of sagellmd/cluster/ray_backend.py: ray.nodes() entries as sagellm's
ClusterNode, one per name (no Ray needed: the module imports it only in RayCluster)."""

from __future__ import annotations

from typing import Any

from sagellmd.cluster.ray_backend import AgentUnreachable, cluster_node, one_per_name


def info(
    node_id: str, labels: dict[str, str], alive: bool = True, end_ms: int = 0, gpus: float = 0
) -> dict[str, Any]:
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerAddress": "10.0.0.5",
        "Labels": labels,
        "Resources": {"GPU": gpus} if gpus else {"CPU": 1.0},
        "EndTimeMs": end_ms,
    }


def test_a_node_is_named_by_its_label_else_its_address():
    named = cluster_node(info("a1", {"sagellm.node": "box2", "sagellm.gpus": "simulate:2x80"}))
    assert (named.name, named.gpus, named.message) == ("box2", "simulate:2x80", None)
    plain = cluster_node(info("a2", {}, gpus=4))
    assert (plain.name, plain.gpus, plain.ray_gpus, plain.address) == (
        "10.0.0.5",
        "auto",
        4.0,
        "10.0.0.5",
    )


def test_a_bad_label_makes_the_node_unusable_and_says_why():
    bad_gpus = cluster_node(info("a1", {"sagellm.node": "box2", "sagellm.gpus": "lots"}))
    assert bad_gpus.name == "box2" and bad_gpus.gpus == "none"
    assert "label sagellm.gpus" in (bad_gpus.message or "")
    bad_name = cluster_node(info("a2", {"sagellm.node": "no spaces!"}))
    assert bad_name.name == "10.0.0.5"
    assert "ray start --labels=sagellm.node=NAME" in (bad_name.message or "")


def test_one_entry_per_name_the_alive_one_else_the_newest_dead_one():
    labels = {"sagellm.node": "box2"}
    dead_old = info("old", labels, alive=False, end_ms=100)
    dead_new = info("new", labels, alive=False, end_ms=200)
    live = info("live", labels)
    assert [n.ray_node_id for n in one_per_name([dead_old, live, dead_new])] == ["live"]
    assert [n.ray_node_id for n in one_per_name([dead_new, dead_old])] == ["new"]
    assert [n.ray_node_id for n in one_per_name([dead_old, dead_new])] == ["new"]


def test_two_live_nodes_of_one_name_are_unusable():
    labels = {"sagellm.node": "box2"}
    head = info("h", {"sagellm.node": "head"})
    [box, other] = one_per_name([info("a", labels), head, info("b", labels)])  # by name
    assert other.name == "head" and other.message is None
    assert box.name == "box2" and "two live Ray nodes carry this name" in (box.message or "")


def test_agent_unreachable_names_the_node_and_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(AgentUnreachable("box2", "next_events: timed out")))
    assert (error.node, error.detail) == ("box2", "next_events: timed out")
    assert str(error) == "agent on box2 unreachable: next_events: timed out"
