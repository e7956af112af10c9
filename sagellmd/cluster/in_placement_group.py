"""`python -m sagellmd.cluster.in_placement_group -- COMMAND...`: run a vLLM API server so
that its Ray executor uses the placement group sagellm made for it.

vLLM's Ray executor uses `parallel_config.placement_group`, else
`ray.util.get_current_placement_group()`, else makes a group of its own
(vllm/v1/executor/ray_utils.py, initialize_ray_cluster). A server started as a plain process
has no current group, and none can be given on its command line, so this runs the command in
this process (and the processes it forks) with that function answering the group whose id is
in SAGELLM_PLACEMENT_GROUP. COMMAND must be a Python program: `python script.py ...`,
`python -m module ...`, or a console script such as `vllm serve ...`.
"""

from __future__ import annotations

import importlib
import os
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

GROUP_VARIABLE = "SAGELLM_PLACEMENT_GROUP"


def _use_group(group_id: str) -> None:
    import ray.util

    # ray.util.placement_group is also the name of a function ray.util exports.
    groups = importlib.import_module("ray.util.placement_group")

    def current() -> Any:
        # Asked after ray.init (vLLM connects first): an id needs no namespace.
        return groups.PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))

    groups.get_current_placement_group = current
    ray.util.get_current_placement_group = current


def _is_python(path: str) -> bool:
    return Path(path).name.startswith("python")


def _console_script(name: str) -> str | None:
    found = shutil.which(name)
    if found is None:
        return None
    with open(found, "rb") as handle:
        first = handle.readline()
    return found if first.startswith(b"#!") and b"python" in first else None


def run(command: list[str]) -> None:
    """Run COMMAND as __main__ here; SystemExit carries its exit code."""
    if command and _is_python(command[0]):
        rest = command[1:]
        if len(rest) >= 2 and rest[0] == "-m":
            sys.argv = [rest[1], *rest[2:]]
            runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
            return
        if rest:
            # As `python script.py` would: the script's directory first on the path.
            sys.argv = rest
            sys.path.insert(0, str(Path(rest[0]).resolve().parent))
            runpy.run_path(rest[0], run_name="__main__")
            return
    script = _console_script(command[0]) if command else None
    if script is None:
        raise SystemExit(
            f"in_placement_group: {command[0] if command else '(nothing)'} is not a Python"
            " program (python script.py, python -m module or a console script such as vllm):"
            " an engine spanning nodes must run vLLM's own Python entry point"
        )
    sys.argv = [script, *command[1:]]
    runpy.run_path(script, run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--"]:
        args = args[1:]
    group_id = os.environ.get(GROUP_VARIABLE, "")
    if not group_id:
        raise SystemExit(f"in_placement_group: {GROUP_VARIABLE} is not set")
    _use_group(group_id)
    run(args)


if __name__ == "__main__":
    main()
