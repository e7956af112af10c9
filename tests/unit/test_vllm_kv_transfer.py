"""The kv-transfer argv and environment of vLLM prefill and decode instances, checked against
vLLM's documented flags, KVTransferConfig keys and example launch lines."""

from __future__ import annotations

import socket

import pytest

from sagellmd.disaggregation import Disaggregation, RoleSpec, instances_of
from sagellmd.runtime.kinds.vllm_kv_transfer import (
    KvTransferLaunch,
    kv_transfer_launch,
    p2p_nccl_address,
    side_ports_needed,
)
from sagellmd.runtime.ports import pick_port_block

# vllm/config/kv_transfer.py, KVTransferConfig's fields: anything else makes vLLM refuse the
# flag (a pydantic dataclass), so the JSON may hold only these.
KV_TRANSFER_CONFIG_FIELDS = {
    "kv_connector",
    "engine_id",
    "kv_buffer_device",
    "kv_buffer_size",
    "kv_role",
    "kv_rank",
    "kv_parallel_size",
    "kv_ip",
    "kv_port",
    "kv_connector_extra_config",
    "kv_connector_module_path",
}
# KVRole = Literal["kv_producer", "kv_consumer", "kv_both"] in the same file.
KV_ROLES = {"kv_producer", "kv_consumer", "kv_both"}


def launch(
    connector: str, role: str, port: int | None = 5600, **kwargs: object
) -> KvTransferLaunch:
    options: dict[str, object] = {"engine_id": "lab.chat", "http_port": 8100}
    options.update(kwargs)
    return kv_transfer_launch(connector, role, port, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("connector", ["nixl", "p2p-nccl", "lmcache"])
@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_one_flag_with_compact_json_of_known_keys(connector: str, role: str):
    built = launch(connector, role, notify_port=7500)
    flags = [arg for arg in built.argv if arg.startswith("--")]
    assert flags.count("--kv-transfer-config") == 1
    assert built.argv[0] == "--kv-transfer-config"
    assert " " not in built.argv[1]  # one argv element, never a shell line
    assert set(built.config) <= KV_TRANSFER_CONFIG_FIELDS
    assert built.config["kv_role"] in KV_ROLES
    # vLLM makes a fresh engine_id per start; a fixed one would let D reuse a stale handshake.
    assert "engine_id" not in built.config


def test_nixl_as_the_nixl_guide_runs_it_on_one_host():
    """docs/features/nixl_connector_usage.md: same-host prefiller and decoder."""
    prefill, decode = launch("nixl", "prefill", 5600), launch("nixl", "decode", 5601)
    expected = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert prefill.config == expected and decode.config == expected
    assert prefill.argv == (
        "--kv-transfer-config",
        '{"kv_connector":"NixlConnector","kv_role":"kv_both"}',
    )
    assert prefill.env == {
        "VLLM_NIXL_SIDE_CHANNEL_PORT": "5600",
        "VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1",
    }
    assert decode.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5601"
    assert prefill.env_defaults == {"UCX_NET_DEVICES": "all"}


def test_nixl_keeps_a_side_port_per_tensor_parallel_rank():
    assert side_ports_needed("nixl", "prefill", 1) == 1
    assert side_ports_needed("nixl", "decode", 4) == 4
    assert launch("nixl", "decode", 5659, tensor_parallel=2).side_ports == (5659, 5660)


def test_p2p_nccl_as_the_xpyd_example():
    """examples/online_serving/disaggregated_serving_p2p_nccl_xpyd/disagg_example_p2p_nccl_xpyd.sh."""
    prefill = launch("p2p-nccl", "prefill", 21001, http_port=20003)
    decode = launch("p2p-nccl", "decode", 22001, http_port=20005)
    assert prefill.config == {
        "kv_connector": "P2pNcclConnector",
        "kv_role": "kv_producer",
        "kv_buffer_size": "1e1",
        "kv_port": "21001",
        "kv_connector_extra_config": {
            "http_port": "20003",
            "send_type": "PUT_ASYNC",
            "nccl_num_channels": "16",
        },
    }
    assert decode.config["kv_role"] == "kv_consumer"
    assert decode.config["kv_buffer_size"] == "8e9"
    assert decode.config["kv_port"] == "22001"
    # No proxy_ip: P2pNcclEngine starts its registry ping only when it is set.
    assert "proxy_ip" not in decode.config["kv_connector_extra_config"]  # type: ignore[operator]
    assert prefill.env == {"VLLM_HOST_IP": "127.0.0.1"}
    assert p2p_nccl_address(22001) == "127.0.0.1:22001"
    assert side_ports_needed("p2p-nccl", "prefill", 2) == 2


def test_lmcache_as_the_lmcache_launcher():
    """examples/others/lmcache/disagg_prefill_lmcache_v1/disagg_vllm_launcher.sh and configs/."""
    prefill = launch("lmcache", "prefill", None, notify_port=7500, http_port=8100)
    decode = launch("lmcache", "decode", 7300, http_port=8200)
    assert prefill.config == {
        "kv_connector": "LMCacheConnectorV1",
        "kv_role": "kv_producer",
        "kv_connector_extra_config": {
            "discard_partial_chunks": False,
            "lmcache_rpc_port": "producer8100",
        },
    }
    assert decode.config["kv_role"] == "kv_consumer"
    assert decode.config["kv_connector_extra_config"]["lmcache_rpc_port"] == "consumer8200"  # type: ignore[index]
    assert prefill.argv[2:] == ("--no-enable-prefix-caching",)
    assert prefill.env["LMCACHE_PD_ROLE"] == "sender"
    assert decode.env["LMCACHE_PD_ROLE"] == "receiver"
    for built in (prefill, decode):
        assert built.env["LMCACHE_ENABLE_PD"] == "True"
        assert built.env["LMCACHE_TRANSFER_CHANNEL"] == "nixl"
        assert built.env["LMCACHE_PD_BUFFER_DEVICE"] == "cuda"
        assert built.env_defaults["UCX_TLS"] == "cuda_ipc,cuda_copy,tcp"
    assert prefill.env["LMCACHE_PD_BUFFER_SIZE"] == "1073741824"
    assert decode.env["LMCACHE_PD_BUFFER_SIZE"] == "2147483648"
    assert (prefill.env["LMCACHE_PD_PROXY_HOST"], prefill.env["LMCACHE_PD_PROXY_PORT"]) == (
        "127.0.0.1",
        "7500",
    )
    assert (decode.env["LMCACHE_PD_PEER_INIT_PORT"], decode.env["LMCACHE_PD_PEER_ALLOC_PORT"]) == (
        "7300",
        "7301",
    )
    assert "LMCACHE_PD_PEER_HOST" not in prefill.env and "LMCACHE_PD_PROXY_PORT" not in decode.env
    # Equal on P and D of one engine (LMCache's chunk keys hash with it), another elsewhere.
    assert prefill.env["PYTHONHASHSEED"] == decode.env["PYTHONHASHSEED"]
    other = launch("lmcache", "decode", 7300, engine_id="lab.other")
    assert other.env["PYTHONHASHSEED"] != decode.env["PYTHONHASHSEED"]
    assert (side_ports_needed("lmcache", "prefill"), side_ports_needed("lmcache", "decode")) == (
        0,
        2,
    )


def test_missing_ports_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="needs 1 side port"):
        launch("nixl", "decode", None)
    with pytest.raises(ValueError, match="notify_port"):
        launch("lmcache", "prefill", None)
    with pytest.raises(ValueError, match="unknown connector 'mooncake'"):
        launch("mooncake", "decode")
    with pytest.raises(ValueError, match="unknown role 'both'"):
        launch("nixl", "both")


@pytest.mark.parametrize("connector", ["nixl", "p2p-nccl"])
def test_p_and_d_of_one_engine_get_different_side_ports(connector: str):
    block = Disaggregation(RoleSpec(replicas=2, tensor_parallel=2), RoleSpec(replicas=1))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]
        start = max(1024, busy - 3)
        taken: set[int] = set()
        launches = {}
        for instance in instances_of("lab.chat", block):
            count = side_ports_needed(connector, instance.role, instance.tensor_parallel)
            first = pick_port_block(start, start + 200, taken, count)
            assert first is not None
            built = launch(
                connector, instance.role, first, tensor_parallel=instance.tensor_parallel
            )
            taken.update(built.side_ports)
            launches[instance.instance_id] = built
    ports = [set(built.side_ports) for built in launches.values()]
    assert sum(map(len, ports)) == len(set().union(*ports)) == 5
    assert busy not in set().union(*ports)
    if connector == "nixl":
        env_ports = {built.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] for built in launches.values()}
        assert len(env_ports) == 3


def test_pick_port_block_skips_taken_and_busy_ports():
    busy = {10003}
    assert pick_port_block(10000, 10010, {10001}, 2, lambda p: p not in busy) == 10004
    assert pick_port_block(10000, 10003, set(), 4, lambda p: True) == 10000
    assert pick_port_block(10000, 10002, set(), 4, lambda p: True) is None
