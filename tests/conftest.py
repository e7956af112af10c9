"""Run-wide hooks (the controller loads this one under xdist too)."""

from __future__ import annotations

from typing import Any

from tests.browser.artifacts import SCREENSHOTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.glob("*.png")):
        terminalreporter.write_line(f"dashboard screenshots (CI artifacts): {SCREENSHOTS}")
