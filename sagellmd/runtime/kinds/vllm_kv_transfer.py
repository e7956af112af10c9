"""The kv-transfer flags and environment of one vLLM prefill or decode instance, by connector.

Each choice follows vLLM's own docs and examples (vllm-project/vllm, read 2026-12):

* `--kv-transfer-config <JSON>`, its keys and the kv_role values: vllm/config/kv_transfer.py
  (KVTransferConfig: kv_connector, kv_role in kv_producer | kv_consumer | kv_both, required
  once kv_connector is set; kv_port; kv_buffer_size; kv_connector_extra_config).
* nixl -> NixlConnector, kv_role kv_both on both sides: docs/features/nixl_connector_usage.md
  ("Basic Usage (on the same host)") and tests/v1/kv_connector/nixl_integration/
  run_accuracy_test.sh both use kv_both; the guide says NixlConnector does not distinguish
  kv_role (the proxy decides who prefills). `VLLM_NIXL_SIDE_CHANNEL_PORT` must be unique per
  instance on a host and `VLLM_NIXL_SIDE_CHANNEL_HOST` (default "localhost") is where the
  peer connects: 127.0.0.1 here, the address engines bind. Older vLLM adds the TP rank to the
  port (run_accuracy_test.sh spaces decoders by TP size "to avoid clash with TP workers"),
  so an instance keeps tensor_parallel ports from its base. `UCX_NET_DEVICES=all` is in
  every example; a default the spec's env may override. kv_load_failure_policy is left out:
  its documented default is "fail", and vLLM releases before it refuse the key.
  engine_id is left out too: vLLM makes a fresh one per start, so a decode instance never
  reuses the handshake it cached for a prefill instance's previous life.
* p2p-nccl -> P2pNcclConnector, kv_producer / kv_consumer: examples/online_serving/
  disaggregated_serving_p2p_nccl_xpyd/disagg_example_p2p_nccl_xpyd.sh (kv_buffer_size
  "1e1" on P, "8e9" on D; kv_port; extra config http_port, send_type PUT_ASYNC,
  nccl_num_channels "16"). The engine listens on kv_port + TP rank
  (vllm/distributed/kv_transfer/kv_connector/v1/p2p/p2p_nccl_engine.py) at get_ip(), so
  `VLLM_HOST_IP=127.0.0.1` pins the address the gateway names in the request id
  (`___prefill_addr_HOST:PORT___decode_addr_HOST:PORT_UUID`, disagg_proxy_p2p_nccl_xpyd.py).
  proxy_ip / proxy_port are left out: they only start a ping to that example's ZMQ
  registry, which sagellm does not need (its daemon knows every instance).
* lmcache -> LMCacheConnectorV1, kv_producer / kv_consumer with extra config
  discard_partial_chunks false and a unique lmcache_rpc_port, `--no-enable-prefix-caching`:
  examples/others/lmcache/disagg_prefill_lmcache_v1/disagg_vllm_launcher.sh. The launcher's
  YAML files (configs/lmcache-{prefiller,decoder}-config.yaml) are given as the LMCACHE_*
  variables LMCache documents for each key (its "Configuring LMCache" page): enable_pd,
  transfer_channel nixl, pd_role sender / receiver, pd_buffer_size 1 GiB / 2 GiB,
  pd_buffer_device cuda, local_cpu off; the sender names the proxy it notifies
  (pd_proxy_host/port, the gateway's), the receiver binds pd_peer_init_port and
  pd_peer_alloc_port. PYTHONHASHSEED must be equal on P and D (the launcher: LMCache's chunk
  keys hash with it), so it is derived from the engine id. UCX_TLS=cuda_ipc,cuda_copy,tcp,
  VLLM_ENABLE_V1_MULTIPROCESSING=1 and VLLM_WORKER_MULTIPROC_METHOD=spawn as the launcher.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from zlib import crc32

from sagellmd.runtime.kinds.base import ENGINE_HOST

ROLES = ("prefill", "decode")
CONNECTOR_CLASSES = {
    "nixl": "NixlConnector",
    "p2p-nccl": "P2pNcclConnector",
    "lmcache": "LMCacheConnectorV1",
}
KV_ROLES = {
    "nixl": {"prefill": "kv_both", "decode": "kv_both"},
    "p2p-nccl": {"prefill": "kv_producer", "decode": "kv_consumer"},
    "lmcache": {"prefill": "kv_producer", "decode": "kv_consumer"},
}
FLAG = "--kv-transfer-config"
# P2pNcclConnector's buffer thresholds from vLLM's xPyD example: P sends at once (PUT_ASYNC),
# D holds what arrives until its request is scheduled.
P2P_BUFFER_SIZE = {"prefill": "1e1", "decode": "8e9"}
LMCACHE_BUFFER_BYTES = {"prefill": 1 << 30, "decode": 2 << 30}
LMCACHE_PD_ROLE = {"prefill": "sender", "decode": "receiver"}


@dataclass(frozen=True)
class KvTransferLaunch:
    """What one instance adds to its vLLM command: flags, environment, the ports it binds."""

    argv: tuple[str, ...]
    # Set as they are: ports and roles the other side and the gateway rely on.
    env: Mapping[str, str] = field(default_factory=dict)
    # Tuning from vLLM's examples, set only where the spec's env has no value of its own.
    env_defaults: Mapping[str, str] = field(default_factory=dict)
    side_ports: tuple[int, ...] = ()

    @property
    def config(self) -> dict[str, object]:
        """The --kv-transfer-config JSON, parsed back."""
        return json.loads(self.argv[self.argv.index(FLAG) + 1])


def side_ports_needed(connector: str, role: str, tensor_parallel: int = 1) -> int:
    """How many consecutive ports from its base an instance binds for the KV hand-over."""
    _check(connector, role)
    if connector == "lmcache":
        # The sender only connects out; the receiver binds an init and an alloc port.
        return 0 if role == "prefill" else 2
    return tensor_parallel


def _check(connector: str, role: str) -> None:
    if connector not in CONNECTOR_CLASSES:
        raise ValueError(f"unknown connector {connector!r}; known: {', '.join(CONNECTOR_CLASSES)}")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def _flag(config: Mapping[str, object]) -> tuple[str, str]:
    return (FLAG, json.dumps(config, separators=(",", ":")))


def kv_transfer_launch(
    connector: str,
    role: str,
    side_port: int | None,
    *,
    engine_id: str,
    http_port: int,
    tensor_parallel: int = 1,
    notify_port: int | None = None,
) -> KvTransferLaunch:
    """The flags and environment of one instance of `engine_id` (the engine, not the instance).

    `side_port` is the first of side_ports_needed() free ports (None when it needs none);
    `http_port` the instance's own --port; `notify_port` the gateway's port LMCache's sender
    reports a finished transfer to (lmcache prefill only).
    """
    _check(connector, role)
    needed = side_ports_needed(connector, role, tensor_parallel)
    if needed and side_port is None:
        raise ValueError(f"a {connector} {role} instance needs {needed} side port(s)")
    ports = tuple(range(side_port, side_port + needed)) if side_port is not None else ()
    config: dict[str, object] = {
        "kv_connector": CONNECTOR_CLASSES[connector],
        "kv_role": KV_ROLES[connector][role],
    }
    if connector == "nixl":
        return KvTransferLaunch(
            argv=_flag(config),
            env={
                "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side_port),
                "VLLM_NIXL_SIDE_CHANNEL_HOST": ENGINE_HOST,
            },
            env_defaults={"UCX_NET_DEVICES": "all"},
            side_ports=ports,
        )
    if connector == "p2p-nccl":
        config.update(
            kv_buffer_size=P2P_BUFFER_SIZE[role],
            kv_port=str(side_port),
            kv_connector_extra_config={
                "http_port": str(http_port),
                "send_type": "PUT_ASYNC",
                "nccl_num_channels": "16",
            },
        )
        return KvTransferLaunch(
            argv=_flag(config), env={"VLLM_HOST_IP": ENGINE_HOST}, side_ports=ports
        )
    return _lmcache(config, role, ports, engine_id, http_port, notify_port)


def _lmcache(
    config: dict[str, object],
    role: str,
    ports: tuple[int, ...],
    engine_id: str,
    http_port: int,
    notify_port: int | None,
) -> KvTransferLaunch:
    word = "producer" if role == "prefill" else "consumer"
    # A name per instance on this box: the example's producer1 / consumer1, made unique.
    config["kv_connector_extra_config"] = {
        "discard_partial_chunks": False,
        "lmcache_rpc_port": f"{word}{http_port}",
    }
    env = {
        "LMCACHE_ENABLE_PD": "True",
        "LMCACHE_TRANSFER_CHANNEL": "nixl",
        "LMCACHE_PD_ROLE": LMCACHE_PD_ROLE[role],
        "LMCACHE_PD_BUFFER_SIZE": str(LMCACHE_BUFFER_BYTES[role]),
        "LMCACHE_PD_BUFFER_DEVICE": "cuda",
        "LMCACHE_LOCAL_CPU": "False",
        "LMCACHE_MAX_LOCAL_CPU_SIZE": "0",
        "LMCACHE_MAX_LOCAL_DISK_SIZE": "0",
        "PYTHONHASHSEED": str(crc32(engine_id.encode())),
    }
    if role == "prefill":
        if notify_port is None:
            raise ValueError("an lmcache prefill instance needs the gateway's notify_port")
        env.update(LMCACHE_PD_PROXY_HOST=ENGINE_HOST, LMCACHE_PD_PROXY_PORT=str(notify_port))
    else:
        env.update(
            LMCACHE_PD_PEER_HOST=ENGINE_HOST,
            LMCACHE_PD_PEER_INIT_PORT=str(ports[0]),
            LMCACHE_PD_PEER_ALLOC_PORT=str(ports[1]),
        )
    return KvTransferLaunch(
        argv=(*_flag(config), "--no-enable-prefix-caching"),
        env=env,
        env_defaults={
            "UCX_TLS": "cuda_ipc,cuda_copy,tcp",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
            "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        },
        side_ports=ports,
    )


def p2p_nccl_address(side_port: int) -> str:
    """Where a P2pNcclConnector instance listens (its ZMQ address in the request id)."""
    return f"{ENGINE_HOST}:{side_port}"
