"""What each field of an engine spec and a preset allows, in words, for error messages that
tell the fix (spec.py and disaggregated_block.py both word their messages with these)."""

from __future__ import annotations

from sagellmd.schemas.engine import (
    ALIAS_PATTERN,
    IDLE_ACTIONS,
    KINDS,
    NO_CONTROL_PATTERN,
    RESTART_POLICIES,
    START_POLICIES,
    TEXT_PATTERN,
)

CONTROL_RULES = {
    NO_CONTROL_PATTERN: "must not contain control characters (NUL, tab, newline, ESC, ...)",
    TEXT_PATTERN: (
        "must not contain control characters other than tab and line breaks (NUL, ESC, ...)"
    ),
    ALIAS_PATTERN: "must be one word: no spaces or control characters",
}

CRON_RULE = (
    "must be a cron expression or null: minute (0-59) hour (0-23) day (1-31) month (1-12 or"
    " jan-dec) weekday (0-7 or sun-sat, 0 and 7 are Sunday), optionally seconds first; each"
    " field *, a value, a range a-b, a step */n or a-b/n, or a list of them"
)
NAME_RULE = (
    "must be lowercase letters, digits and '-', start and end alphanumeric, at most 63 chars"
)

FIELD_RULES = {
    "name": NAME_RULE,
    "kind": f"must be one of: {', '.join(KINDS)}",
    "model": "must be a non-empty string (a Hugging Face id or a local path)",
    "runtime": "must be a runtime name (vllm, embedding, llama-cpp or one from config runtimes)",
    "tensor_parallel": "must be an integer >= 1",
    "pipeline_parallel": "must be an integer >= 1",
    "nodes": "must be an integer >= 1 (cluster nodes the engine spans), or null",
    "port": "must be an integer from 1 to 65535, or null for automatic",
    "label": "must be a string or null",
    "aliases": "must be a list of distinct names (one word each) clients may send as `model`",
    "max_concurrent_requests": "must be an integer >= 1",
    "use_gpu": "must be true, false or null",
    "gpu_memory_gb": "must be a number > 0 (GiB per GPU) or null for an estimate",
    "extra_args": "must be a list of strings",
    "env": "must be a mapping of VARIABLE_NAME to string",
    "metadata": "must be a mapping",
    "restart": f"must be one of: {', '.join(RESTART_POLICIES)}",
    "startup_timeout_s": "must be a number of seconds > 0",
    "restart_schedule": CRON_RULE,
    "start": f"must be one of: {', '.join(START_POLICIES)}",
    "idle_s": "must be a number of seconds > 0, or null for never idle",
    "idle_action": f"must be one of: {', '.join(IDLE_ACTIONS)}",
    "version": "must be 1",
    "description": "must be a string",
    "engines": "must be a non-empty list of engine specs",
}
