"""A real Chromium (Debian's package, driven by Playwright) against a real daemon.

Screenshots of every view land in one folder, printed at the end of the run
(`SAGELLM_SCREENSHOTS` moves it; CI keeps it as an artifact).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.artifacts import SCREENSHOTS
from tests.integration.conftest import (  # noqa: F401  (make_daemon is a fixture)
    Daemon,
    make_daemon,
)

CHROMIUM = Path(os.environ.get("SAGELLM_CHROMIUM", "/usr/bin/chromium"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # the [test] extra brings it; without it these tests say so
    sync_playwright = None  # type: ignore[assignment]


def _why_no_browser() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


# Module scope, not session: while Playwright's sync API runs it holds an event loop that
# counts as running in this thread, and a later test of another module on the same xdist
# worker could not asyncio.run(); pytest ends a module's fixtures before the next module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = _why_no_browser()
    if reason:
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


class Dashboard:
    """A daemon and the pages signed in to its dashboard (JS errors fail the test)."""

    def __init__(self, browser: Browser, daemon: Daemon) -> None:
        self.browser = browser
        self.daemon = daemon
        self.page_errors: list[str] = []
        self._contexts: list[Any] = []

    def sign_in_url(self) -> str:
        answer = self.daemon.post("/v1/ui/codes")
        assert answer.status_code == 200, answer.text
        return answer.json()["url"]

    def new_page(self, viewport: dict[str, int] | None = None) -> Page:
        context = self.browser.new_context(viewport=viewport or DESKTOP)
        self._contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        return page

    def open(self, view: str = "overview", viewport: dict[str, int] | None = None) -> Page:
        """A new signed-in page showing `#/view`."""
        page = self.new_page(viewport)
        page.goto(self.sign_in_url())
        page.wait_for_selector("#nav-overview")
        if view != "overview":
            page.goto(f"{self.daemon.url}/ui/#/{view}")
        page.wait_for_selector(f'#view[data-view="{view.split("/")[0]}"]')
        return page

    def close(self) -> None:
        for context in self._contexts:
            context.close()


@pytest.fixture
def make_dashboard(
    browser: Browser,
    make_daemon: Callable[..., Daemon],  # noqa: F811  (the fixture imported above)
) -> Iterator[Callable[..., Dashboard]]:
    made: list[Dashboard] = []

    def make(**overrides: Any) -> Dashboard:
        dashboard = Dashboard(browser, make_daemon(**overrides))
        made.append(dashboard)
        return dashboard

    yield make
    errors = [error for dashboard in made for error in dashboard.page_errors]
    for dashboard in made:
        dashboard.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def dashboard(make_dashboard: Callable[..., Dashboard]) -> Dashboard:
    return make_dashboard()


def screenshot(page: Page, name: str) -> Path:
    """Saves the page under SCREENSHOTS/<name>.png (one file per view and size)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
