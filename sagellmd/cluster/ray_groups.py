"""Ray placement groups for engines that span nodes: one `{GPU: 1}` bundle per GPU, each
pinned by the `sagellm.node` label to the node the planner chose (docs/multi-node.md).

Named and detached, so a restarted daemon finds them; the name is the engine's."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

# A group of free logical GPUs is ready in milliseconds; one that waits names a shortfall
# sagellm's placement did not foresee (another user of the cluster's GPUs).
READY_TIMEOUT_S = 20.0


class GroupNotReady(Exception):
    pass


def group_name(engine_id: str) -> str:
    return f"sagellm-pg-{engine_id}"


def create_group(ray: ModuleType, name: str, arguments: Mapping[str, Any]) -> str:
    """A new group named `name` (an older one of that name is removed first); its id."""
    from ray.util.placement_group import placement_group, remove_placement_group

    remove_group(ray, name)
    group = placement_group(
        list(arguments["bundles"]),
        strategy=str(arguments["strategy"]),
        name=name,
        lifetime="detached",
        bundle_label_selector=list(arguments["bundle_label_selector"]),
    )
    if not group.wait(timeout_seconds=READY_TIMEOUT_S):
        remove_placement_group(group)
        nodes = ", ".join(sorted({s["sagellm.node"] for s in arguments["bundle_label_selector"]}))
        raise GroupNotReady(
            f"Ray did not place {len(arguments['bundles'])} GPU bundles on {nodes} within"
            f" {READY_TIMEOUT_S:g} s (Ray's free GPUs there differ from sagellm's view)"
        )
    return group.id.hex()


def remove_group(ray: ModuleType, name: str) -> bool:
    from ray.util.placement_group import get_placement_group, remove_placement_group

    try:
        group = get_placement_group(name)
    except ValueError:
        return False
    with contextlib.suppress(Exception):
        remove_placement_group(group)
    return True


def bundle_nodes(ray: ModuleType, group_id: str) -> list[str]:
    """The node (its sagellm.node label) of each bundle of the group, in bundle order."""
    from ray.util import placement_group_table

    table = placement_group_table()
    entry = table.get(group_id) or {}
    labels = {node["NodeID"]: (node.get("Labels") or {}) for node in ray.nodes()}
    by_bundle = entry.get("bundles_to_node_id") or {}
    return [
        labels.get(by_bundle[index], {}).get("sagellm.node", "?") for index in sorted(by_bundle)
    ]
