"""Owns the tests of the pure parts of cluster mode (issue 17, docs/multi-node.md):
sagellmd/gpu/cluster_placement.py, reconcile/spread_starts.py, reconcile/cluster_world.py's
numbering, instance.lost, the route URL of an engine on another node, runtime/kinds/vllm_ray.py
and cluster/in_placement_group.py. The daemon on a real Ray cluster: tests/cluster/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sagellmd.api.route_entries import route_entry
from sagellmd.desired import DesiredEngine
from sagellmd.errors import SpecError
from sagellmd.gpu.cluster_placement import locate, place_on_a_node
from sagellmd.gpu.placement import (
    GIB,
    GpuCapacity,
    GpuView,
    NodeGpus,
    NotPlaced,
    Placed,
    Reservation,
)
from sagellmd.instance import Instance, InstanceState, lost
from sagellmd.reconcile.actions import Start
from sagellmd.reconcile.cluster_world import in_view_numbering
from sagellmd.reconcile.spread_starts import place_spread, spans_nodes
from sagellmd.runtime.kinds.vllm_ray import ray_executor_launch
from sagellmd.spec import parse_engine

ROOT = Path(__file__).resolve().parents[2]


def view(*nodes: tuple[str, int, str]) -> GpuView:
    """Nodes of `count` 80 GiB GPUs each, numbered as the loop does (0, 1000, 2000...)."""
    gpus, entries = [], []
    for slot, (name, count, note) in enumerate(nodes):
        offset = slot * 1000
        entries.append(NodeGpus(name, offset, count, note))
        gpus += [GpuCapacity(offset + i, 80 * GIB) for i in range(count)]
    return GpuView(tuple(gpus), 0.95, "", {}, tuple(entries))


def start(**spec: object) -> Start:
    engine = parse_engine({"name": "big", "model": "m", **spec})
    return Start(DesiredEngine("p.big", "p", engine), "declared")


def test_an_engine_s_gpus_are_all_on_one_node_the_fullest_that_fits():
    cluster = view(("head", 0, "no GPUs (gpus: none)"), ("a", 2, ""), ("b", 2, ""))
    taken = [Reservation("x", (1000,), 40 * GIB), Reservation("y", (2000,), 60 * GIB)]
    placed = place_on_a_node(2, 10 * GIB, cluster.gpus, taken, cluster, set())
    # Both nodes hold 2 x 10 GiB; b is left with less room (best fit), in b's numbering 0, 1.
    assert placed == Placed((2000, 2001), 10 * GIB)
    assert locate(placed.gpus, cluster.nodes) == ("b", (0, 1))


def test_a_reason_names_every_node_in_its_own_numbering():
    cluster = view(
        ("head", 0, "no GPUs (gpus: none)"), ("a", 1, ""), ("b", 2, "dead since 12:04:10")
    )
    taken = [Reservation("x", (1000,), 70 * GIB)]
    outcome = place_on_a_node(1, 20 * GIB, cluster.gpus, taken, cluster, set())
    assert isinstance(outcome, NotPlaced)
    assert outcome.message == (
        "needs 1 GPU x 20.0 GiB; a: GPU0 6.0 GiB free; b: dead since 12:04:10;"
        " head: no GPUs (gpus: none)"
    )


def test_gpus_on_two_nodes_are_no_one_engine_s():
    cluster = view(("a", 2, ""), ("b", 2, ""))
    with pytest.raises(ValueError, match="straddle"):
        locate((1, 1000), cluster.nodes)


def test_an_engine_spans_nodes_when_it_says_so_or_no_node_is_big_enough():
    cluster = view(("a", 2, ""), ("b", 2, ""))
    assert spans_nodes(parse_engine({"name": "e", "model": "m", "nodes": 2}), cluster)
    assert not spans_nodes(parse_engine({"name": "e", "model": "m", "tensor_parallel": 2}), cluster)
    big = parse_engine({"name": "e", "model": "m", "tensor_parallel": 2, "pipeline_parallel": 2})
    assert spans_nodes(big, cluster)
    assert not spans_nodes(big, GpuView(()))  # one machine: the usual "needs 4 GPUs" reason


def test_a_spanning_start_holds_whole_gpus_on_the_nodes_it_gets():
    cluster = view(("head", 0, "no GPUs"), ("a", 2, ""), ("b", 2, ""))
    action = start(tensor_parallel=2, pipeline_parallel=2, nodes=2)
    placed = place_spread(action, 60 * GIB, cluster, [], set())
    assert isinstance(placed, Start) and placed.spread is not None
    assert sorted(placed.gpus) == [1000, 1001, 2000, 2001]
    assert placed.gpu_bytes == 80 * GIB  # whole: no other engine may share them
    assert [(s.node, s.gpus) for s in placed.spread.shares] == [("a", (0, 1)), ("b", (0, 1))]
    arguments = placed.spread.placement_group()
    assert arguments["bundles"] == [{"GPU": 1}] * 4
    assert arguments["bundle_label_selector"] == [{"sagellm.node": n} for n in "aabb"]


def test_nodes_without_a_cluster_waits_saying_what_to_add():
    outcome = place_spread(start(nodes=2, pipeline_parallel=2), GIB, GpuView(()), [], set())
    assert isinstance(outcome, NotPlaced)
    assert (
        outcome.message.startswith("nodes: 2 spans cluster nodes") and "cluster:" in outcome.message
    )


def test_the_planner_sees_each_instance_s_gpus_in_the_view_s_numbering():
    cluster = view(("head", 1, ""), ("a", 2, ""), ("b", 2, "dead"))
    instances = {
        "local": Instance("local", 1, "h", InstanceState.READY, gpus=(0,)),
        "on-a": Instance("on-a", 1, "h", InstanceState.READY, gpus=(1,), node="a"),
        "on-b": Instance("on-b", 1, "h", InstanceState.READY, gpus=(0,), node="b"),
        "both": Instance(
            "both", 1, "h", InstanceState.READY, node="a", spans=(("a", (0,)), ("b", (1,)))
        ),
    }
    seen = in_view_numbering(instances, cluster, "head")
    assert seen["local"].gpus == (0,) and seen["on-a"].gpus == (1001,)
    assert seen["on-b"].gpus == ()  # a dead node's GPUs hold nothing
    assert seen["both"].gpus == (1000,)


def test_a_lost_engine_is_placed_again_without_counting_a_failure():
    ready = Instance("e", 1, "h", InstanceState.READY, pid=42, failures=2, node="b")
    after = lost(ready, "b", 100.0, "always")
    assert after.event_type == "lost" and after.instance.state is InstanceState.BACKOFF
    assert after.instance.failures == 2 and after.instance.pid is None
    assert "node b is gone (pid 42 with it)" in after.message
    assert lost(ready, "b", 100.0, "never").instance.state is InstanceState.FAILED


def test_the_route_of_an_engine_on_another_node_is_its_node_s_address():
    engine = DesiredEngine("p.chat", "p", parse_engine({"name": "chat", "model": "m"}))
    instance = Instance(
        "p.chat", 1, engine.spec.spec_hash, InstanceState.READY, port=20001, node="b"
    )
    hosts = {"b": "10.0.0.6", "v6": "fd00::6"}
    assert route_entry(engine, instance, hosts.get)["url"] == "http://10.0.0.6:20001"
    on_v6 = Instance("p.chat", 1, "h", InstanceState.READY, port=20001, node="v6")
    assert route_entry(engine, on_v6, hosts.get)["url"] == "http://[fd00::6]:20001"
    here = Instance("p.chat", 1, "h", InstanceState.READY, port=20001)
    assert route_entry(engine, here, hosts.get)["url"] == "http://127.0.0.1:20001"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodes": 0}, "nodes: must be an integer >= 1"),
        ({"nodes": 2, "runtime": "llama-cpp"}, "nodes: an engine spans nodes through vLLM's Ray"),
        ({"nodes": 2, "kind": "embedding", "runtime": "vllm"}, "only llm engines of runtime vllm"),
    ],
)
def test_bad_nodes_values_name_the_field(spec, message):
    with pytest.raises(SpecError) as caught:
        parse_engine({"name": "e", "model": "m", **spec})
    assert message in str(caught.value)


def test_nodes_is_in_the_hash_only_when_set():
    plain = parse_engine({"name": "e", "model": "m"})
    assert "nodes" not in plain.to_dict()
    assert parse_engine({"name": "e", "model": "m", "nodes": 1}).spec_hash != plain.spec_hash


def test_the_leader_of_an_engine_spanning_nodes_runs_vllm_s_ray_executor_in_the_group():
    spec = parse_engine({"name": "e", "model": "m", "extra_args": ["--enforce-eager"]})
    argv = ["vllm", "serve", "m", "--tensor-parallel-size", "2", "--enforce-eager"]
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/bin"}
    launched, launched_env = ray_executor_launch(
        argv, env, spec, "ab12", "10.0.0.5:6379", "10.0.0.6", python="/py"
    )
    assert launched[:4] == ["/py", "-m", "sagellmd.cluster.in_placement_group", "--"]
    assert launched[4:] == [
        "vllm",
        "serve",
        "m",
        "--tensor-parallel-size",
        "2",
        "--distributed-executor-backend",
        "ray",
        "--enforce-eager",
    ]
    assert "CUDA_VISIBLE_DEVICES" not in launched_env
    assert launched_env["RAY_ADDRESS"] == "10.0.0.5:6379"
    assert launched_env["VLLM_HOST_IP"] == "10.0.0.6"
    assert launched_env["SAGELLM_PLACEMENT_GROUP"] == "ab12"


def test_in_placement_group_makes_ray_s_current_group_the_one_it_is_given(tmp_path):
    pytest.importorskip("ray")
    script = tmp_path / "server.py"
    (tmp_path / "helper.py").write_text("VALUE = 'sibling imported'\n")
    script.write_text(
        "import json, sys, ray.util\n"
        "from helper import VALUE\n"
        "group = ray.util.get_current_placement_group()\n"
        "print(json.dumps({'id': group.id.hex(), 'argv': sys.argv, 'helper': VALUE}))\n"
    )
    group_id = "ab" * 18
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagellmd.cluster.in_placement_group",
            "--",
            sys.executable,
            str(script),
            "--port",
            "1",
        ],
        env={"PYTHONPATH": str(ROOT), "SAGELLM_PLACEMENT_GROUP": group_id, "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {
        "id": group_id,
        "argv": [str(script), "--port", "1"],
        "helper": "sibling imported",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "sagellmd.cluster.in_placement_group", "--", "/bin/true"],
        env={"PYTHONPATH": str(ROOT), "SAGELLM_PLACEMENT_GROUP": group_id},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "is not a Python program" in refused.stderr
