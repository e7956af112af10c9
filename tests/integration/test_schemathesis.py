"""A bounded schemathesis run against /openapi.json: no 5xx, no schema violation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import FAKE_VLLM


# About a minute alone; several on two busy cores next to the rest of the suite.
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_or_schema_violation(make_daemon, tmp_path: Path):
    # Every runtime is the light stand-in: fuzzed specs start real (cheap) processes.
    stand_in = {"command": [sys.executable, str(FAKE_VLLM)]}
    daemon = make_daemon(runtimes={"vllm": stand_in, "embedding": stand_in})
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{daemon.url}/openapi.json",
            "--checks",
            "all",
            # JSON Schema cannot say everything the validators check (a cron range's order,
            # unique engine names and ports in a preset, a body name equal to the path's),
            # so a schema-valid body may still get a 400 or 409 that names the field.
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "5",
            "--seed",
            "7",
            "--header",
            f"Authorization: Bearer {daemon.token}",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
            # The events long-poll holds a request up to `wait` (60 s) by design; its
            # parameters are covered by the bad-input tests instead.
            "--exclude-path",
            "/v1/events",
            # The route table long-poll likewise (tests/integration/test_gateway_routes.py).
            "--exclude-path",
            "/v1/routes",
        ],
        capture_output=True,
        text=True,
        timeout=560,
        cwd=tmp_path,
    )
    summary = result.stdout[result.stdout.find("FAILURES") :][:6000]
    assert result.returncode == 0, summary
    assert "Tested:" in result.stdout
    assert daemon.process.poll() is None  # the daemon survived the fuzzing
