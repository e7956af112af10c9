"""The `cluster:` section (issue 17, docs/multi-node.md), and the Ray node labels sagellm
reads: `sagellm.node` (a stable node name) and `sagellm.gpus` (a node's simulated GPUs).

Parsing only, no Ray: config.py calls it for the `cluster:` key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagellmd.errors import ConfigError
from sagellmd.gpu.inventory import parse_gpu_setting

BACKENDS = ("ray",)
KNOWN_KEYS = ("address", "advertise", "backend", "namespace")
# Ray's own label syntax is looser; names end up in event text, status tables and actor
# names (sagellm-agent-<name>), so they stay plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

NODE_LABEL = "sagellm.node"
GPUS_LABEL = "sagellm.gpus"


@dataclass(frozen=True)
class ClusterSettings:
    """`cluster: {backend: ray, address: auto | HOST:PORT, namespace: sagellm}`.

    `address` "auto" means Ray's own lookup (RAY_ADDRESS, else the cluster this node
    belongs to). `advertise` maps a node name to the address engines there serve on, for
    nodes whose Ray address is not the one the gateway should use.
    """

    backend: str = "ray"
    address: str = "auto"
    namespace: str = "sagellm"
    advertise: Mapping[str, str] = field(default_factory=dict)


def parse_cluster(value: Any, where: str) -> ClusterSettings:
    """The section's settings; a bad value raises ConfigError naming `where: cluster.KEY`.

    A bare `cluster:` (null) means every default: the key alone says a cluster is meant.
    """
    if value is None:
        return ClusterSettings()
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: cluster: must be a mapping such as {{backend: ray, address: auto}},"
            f" got {value!r}"
        )
    unknown = sorted(str(key) for key in value if key not in KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: cluster: unknown key(s) {', '.join(unknown)}; known: {', '.join(KNOWN_KEYS)}"
        )
    backend = value.get("backend", "ray")
    if backend not in BACKENDS:
        raise ConfigError(
            f"{where}: cluster.backend: must be ray (the only backend), got {backend!r}"
        )
    return ClusterSettings(
        backend=backend,
        address=_address(value.get("address", "auto"), f"{where}: cluster.address"),
        namespace=_namespace(value.get("namespace", "sagellm"), f"{where}: cluster.namespace"),
        advertise=_advertise(value.get("advertise"), f"{where}: cluster.advertise"),
    )


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: must be auto or HOST:PORT (10.0.0.5:6379), got {value!r}")
    text = value.strip()
    if text == "auto":
        return text
    if "://" in text:
        # ray:// is Ray Client: a proxy with its own limits, not the cluster's GCS.
        raise ConfigError(
            f"{where}: give the head's GCS address as HOST:PORT (10.0.0.5:6379), not a URL;"
            f" got {value!r}"
        )
    host, port = _split_host_port(text, where, value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(text: str, where: str, original: Any) -> tuple[str, int]:
    bad = ConfigError(
        f"{where}: must be auto or HOST:PORT (10.0.0.5:6379, [fd00::5]:6379), got {original!r}"
    )
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if not rest.startswith(":"):
            raise bad
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host or not host_ok(host):
            raise bad
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: the port must be 1 to 65535, got {original!r}")
    return host, int(port_text)


def host_ok(host: str) -> bool:
    """An IPv4/IPv6 address or a DNS name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host))


def _namespace(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            f"{where}: must be a name of letters, digits, '.', '_' or '-' (sagellm), got {value!r}"
        )
    return value


def _advertise(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: must map node names to addresses (box2: 10.0.0.6), got {value!r}"
        )
    result = {}
    for name, host in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: {name!r} is not a node name (letters, digits, . _ -)")
        if not isinstance(host, str) or not host_ok(host.strip()):
            raise ConfigError(f"{where}.{name}: must be an IP address or host name, got {host!r}")
        result[name] = host.strip()
    return result


@dataclass(frozen=True)
class NodeLabels:
    """What sagellm reads from one Ray node's labels: its name and its GPU setting."""

    name: str
    gpus: str = "auto"
    simulated_sizes_gib: tuple[float, ...] = ()


def node_labels(labels: Mapping[str, str], address: str) -> NodeLabels:
    """The node's name (`sagellm.node`, else its IP: Ray's node ID changes when a raylet
    restarts) and GPUs (`sagellm.gpus`: auto, none or simulate:2x80, as `gpus:`)."""
    where = f"node {address}"
    name = labels.get(NODE_LABEL, "").strip() or address
    if not _NAME.fullmatch(name) and not host_ok(name):
        raise ConfigError(
            f"{where}: label {NODE_LABEL}={name!r}: must be letters, digits, '.', '_' or '-';"
            f" set it with ray start --labels={NODE_LABEL}=NAME"
        )
    raw = labels.get(GPUS_LABEL, "auto")
    try:
        mode, sizes = parse_gpu_setting(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: label {GPUS_LABEL}: {exc.message}") from None
    return NodeLabels(name, mode, sizes)
