"""Owns the tests of the daemon's disaggregated instances: sagellmd/pd_expand.py, the argv and
environment runtime/argv.py builds for one (against vLLM's documented flags),
reconcile/side_ports.py, reconcile/rollout_set.py and api/pd_views.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from sagellmd.api.pd_views import derived_state
from sagellmd.config import DEFAULT_RUNTIMES, Settings
from sagellmd.desired import DesiredEngine
from sagellmd.instance import Instance, InstanceState
from sagellmd.pd_expand import expand_desired, members_of
from sagellmd.reconcile.rollout_set import judge_set
from sagellmd.reconcile.side_ports import choose_side_ports, side_ports_taken
from sagellmd.runtime.argv import build_argv, build_env, side_ports_for
from sagellmd.runtime.kinds.base import GpuAssignment
from sagellmd.spec import parse_engine

T0 = 1_000.0


def parent(**block) -> DesiredEngine:
    spec = parse_engine(
        {
            "name": "chat",
            "model": "Qwen/Qwen3-0.6B",
            "extra_args": ["--max-model-len", "4096"],
            "disaggregated": block,
        }
    )
    return DesiredEngine("p.chat", "p", spec)


def test_expansion_gives_each_instance_its_role_size_and_the_group():
    engine = parent(prefill={"tensor_parallel": 2}, decode={"replicas": 2, "extra_args": ["-O3"]})
    plain = DesiredEngine("solo", None, parse_engine({"name": "solo", "model": "m"}))
    expanded = expand_desired([engine, plain])
    assert [e.id for e in expanded] == [
        "p.chat.prefill-0",
        "p.chat.decode-0",
        "p.chat.decode-1",
        "solo",
    ]
    prefill, decode0, decode1, solo = expanded
    assert solo is plain
    assert prefill.spec.tensor_parallel == 2 and decode0.spec.tensor_parallel == 1
    assert decode1.spec.extra_args == ("--max-model-len", "4096", "-O3")
    assert decode1.pd is not None and (decode1.pd.role, decode1.pd.index) == ("decode", 1)
    assert members_of(expanded, "p.chat") == [prefill, decode0, decode1]
    # A role's hash is its own: a role's change replaces only that role's instances.
    assert prefill.spec.spec_hash != decode0.spec.spec_hash == decode1.spec.spec_hash


def vllm_settings(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, runtimes=dict(DEFAULT_RUNTIMES))


def test_a_real_vllm_instance_gets_vllms_documented_disaggregation_flags_and_env(tmp_path):
    """vLLM's docs/features/nixl_connector_usage.md: --kv-transfer-config with NixlConnector
    and kv_role, --tensor-parallel-size, --port, VLLM_NIXL_SIDE_CHANNEL_PORT unique per
    instance, CUDA_VISIBLE_DEVICES per instance."""
    settings = vllm_settings(tmp_path)
    prefill, decode = expand_desired([parent(decode={"tensor_parallel": 2})])
    built = {}
    for engine, port, gpus, side in ((prefill, 20001, (0,), 20100), (decode, 20002, (1, 2), 20101)):
        assignment = GpuAssignment(gpus, 0.5)
        argv = build_argv(engine.spec, settings, engine.id, port, assignment, side)
        env = build_env(engine.spec, settings, engine.id, port, assignment, side)
        built[engine.id] = (argv, env)
    argv, env = built["p.chat.prefill-0"]
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flag = argv.index("--kv-transfer-config")
    assert json.loads(argv[flag + 1]) == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert argv[argv.index("--port") + 1] == "20001"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "1"
    # The user's args come last, as for every engine.
    assert argv[-2:] == ["--max-model-len", "4096"] and flag < len(argv) - 2
    assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "20100"
    assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "127.0.0.1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["UCX_NET_DEVICES"] == "all"
    argv, env = built["p.chat.decode-0"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--port") + 1] == "20002"
    assert json.loads(argv[argv.index("--kv-transfer-config") + 1])["kv_role"] == "kv_both"
    assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "20101"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert side_ports_for(decode.spec) == 2  # older vLLM adds the TP rank to the port


def test_an_engine_that_is_no_instance_gets_no_kv_flags(tmp_path):
    settings = vllm_settings(tmp_path)
    spec = parse_engine({"name": "solo", "model": "m"})
    argv = build_argv(spec, settings, "solo", 20001)
    assert "--kv-transfer-config" not in argv
    assert "VLLM_NIXL_SIDE_CHANNEL_PORT" not in build_env(spec, settings, "solo", 20001)
    assert side_ports_for(spec) == 0


def test_an_instance_keeps_its_side_ports_while_free_else_takes_a_free_block():
    (prefill, _) = expand_desired([parent()])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        low = sock.getsockname()[1]
    current = Instance(prefill.id, 1, "h", InstanceState.BACKOFF, side_ports=(low,))
    assert choose_side_ports(prefill.spec, current, set(), (low, low + 20)) == ((low,), "")
    ports, _ = choose_side_ports(prefill.spec, current, {low}, (low, low + 20))
    assert ports is not None and ports != (low,) and low < ports[0] <= low + 20
    assert choose_side_ports(prefill.spec, None, {low}, (low, low)) == (
        None,
        f"no 1 free consecutive side-channel ports in {low}-{low}",
    )


def test_side_ports_of_live_instances_are_taken():
    live = Instance("a.prefill-0", 1, "h", InstanceState.READY, side_ports=(30001,))
    gone = Instance("b.prefill-0", 1, "h", InstanceState.STOPPED, side_ports=(30002,))
    instances = {i.engine_id: i for i in (live, gone)}
    assert side_ports_taken(instances, "other", surge=False) == {30001}
    assert side_ports_taken(instances, "a.prefill-0", surge=False) == set()
    assert side_ports_taken(instances, "a.prefill-0", surge=True) == {30001}


def ready(engine: DesiredEngine, ready_at: float) -> Instance:
    return Instance(
        engine.id, 1, engine.spec.spec_hash, InstanceState.READY, pid=1, ready_at=ready_at
    )


def test_the_verdict_on_a_set_waits_for_every_instance_and_fails_with_any():
    engine = parent()
    prefill, decode = expand_desired([engine])
    only_p = {prefill.id: ready(prefill, T0 + 1)}
    waiting = judge_set(engine, T0, only_p, T0 + 5)
    assert waiting.healthy is None and "p.chat.decode-0 not started" in waiting.reason
    both = {**only_p, decode.id: ready(decode, T0 + 2)}
    healthy = judge_set(engine, T0, both, T0 + 5)
    assert healthy.healthy is True
    assert healthy.reason == "p.chat ready (p.chat.prefill-0 ready, p.chat.decode-0 ready)"
    broken = {
        **only_p,
        decode.id: Instance(
            decode.id, 1, decode.spec.spec_hash, InstanceState.FAILED, message="bad flag"
        ),
    }
    failed = judge_set(engine, T0, broken, T0 + 5)
    assert failed.healthy is False and failed.reason == "p.chat.decode-0 failed: bad flag"


def entry(engine_id: str, role: str, state: str) -> dict[str, str]:
    return {"id": engine_id, "role": role, "state": state, "message": state}


def test_the_engine_is_ready_only_with_a_ready_prefill_and_a_ready_decode():
    p0, d0 = entry("c.prefill-0", "prefill", "ready"), entry("c.decode-0", "decode", "ready")
    d1 = entry("c.decode-1", "decode", "backoff")
    assert derived_state([p0, d0, d1]) == ("ready", "1 prefill and 1 decode ready")
    starting = entry("c.decode-0", "decode", "starting")
    assert derived_state([p0, starting]) == ("starting", "c.decode-0: starting")
    pending = entry("c.prefill-0", "prefill", "pending")
    assert derived_state([pending, d0]) == ("pending", "c.prefill-0: pending")
    assert derived_state([p0, starting, d1])[0] == "backoff"
