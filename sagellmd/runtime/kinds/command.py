"""The `command` kind: any runtime of config.yaml that is not built in, run as its template."""

from __future__ import annotations

from sagellmd.runtime.kinds.base import RuntimeKind


class CommandKind(RuntimeKind):
    """`runtimes.<name>.command` with `{model}`, `{model_id}`, `{port}`, ... filled, no flags.

    `{model}` is the local copy when there is one (so it starts without the hub), `{model_id}`
    the id as declared; the base class's defaults are exactly this kind.
    """

    name = "command"
