"""The Overview in a real Chromium against a real daemon with stand-in engines: sign-in,
GPU bars, the engines table live (a SIGKILLed engine's restart count on screen within 1 s),
200 engines, and a phone-sized screen."""

from __future__ import annotations

import os
import signal
import time

from tests.browser.conftest import PHONE, Dashboard, screenshot
from tests.browser.layout import assert_fits_the_screen
from tests.integration.conftest import fake_preset

ROW = 'tr[data-engine="{id}"]'
CELL = 'tr[data-engine="{id}"] td[data-col="{col}"]'

# Records, at the first frame after the engine's restarts cell shows another value, the
# wall clock (Date.now(), the clock Python's time.time() reads too).
WATCH_RESTARTS = """(id) => {
  const cell = () => document.querySelector(`tr[data-engine="${id}"] td[data-col="restarts"]`);
  const before = cell().textContent;
  window.__changedAt = null;
  window.__changedTo = null;
  const observer = new MutationObserver(() => {
    const now = cell();
    if (!now || now.textContent === before || window.__changedTo !== null) return;
    window.__changedTo = now.textContent;
    observer.disconnect();
    requestAnimationFrame(() => { window.__changedAt = Date.now(); });
  });
  observer.observe(document.getElementById("view"),
                   {subtree: true, childList: true, characterData: true});
  return before;
}"""


def set_preset(dashboard: Dashboard, name: str, *engines: dict) -> None:
    answer = dashboard.daemon.put(f"/v1/presets/{name}", fake_preset(name, *engines))
    assert answer.status_code == 200, answer.text


def test_the_one_time_url_signs_in_once_and_the_form_takes_the_token(dashboard: Dashboard):
    url = dashboard.sign_in_url()
    page = dashboard.new_page()
    page.goto(url)
    page.wait_for_selector("#nav-overview")
    assert "code=" not in page.url
    page.wait_for_selector('#view[data-view="overview"] #engines')

    again = dashboard.new_page()
    answer = again.goto(url)
    assert answer is not None and answer.status == 401
    assert "used already" in again.inner_text("body")

    stranger = dashboard.new_page()
    answer = stranger.goto(f"{dashboard.daemon.url}/ui/")
    assert answer is not None and answer.status == 401
    assert stranger.inner_text("h1") == "Sign in to sagellm"
    stranger.fill("#token", "not-the-token")
    stranger.click("#sign-in")
    stranger.wait_for_selector("#sign-in-error")
    stranger.fill("#token", dashboard.daemon.token)
    stranger.click("#sign-in")
    stranger.wait_for_selector('#view[data-view="overview"] #engines')


def test_overview_shows_gpus_engines_events_and_a_killed_engine_within_a_second(
    dashboard: Dashboard,
):
    set_preset(dashboard, "p", {"name": "chat"}, {"name": "big", "model": "fake/model-7B"})
    daemon = dashboard.daemon
    daemon.wait_state("p.chat", "ready")
    daemon.wait_state("p.big", "ready")
    page = dashboard.open("overview")
    page.wait_for_selector(f'{CELL.format(id="p.chat", col="state")}[data-state="ready"]')
    page.wait_for_selector(f'{CELL.format(id="p.big", col="state")}[data-state="ready"]')

    entry = daemon.engine("p.chat")
    assert page.inner_text(CELL.format(id="p.chat", col="pid")) == str(entry["pid"])
    assert page.inner_text(CELL.format(id="p.chat", col="port")) == str(entry["port"])
    assert page.inner_text(CELL.format(id="p.chat", col="model")) == "fake/model-1B"
    assert page.get_attribute(f"{ROW.format(id='p.chat')} a", "href") == "#/engine/p.chat"
    # One bar per simulated GPU, each engine's reservation a segment of it.
    assert page.locator("[data-gpu]").count() == 2
    assert "simulated" in page.inner_text("#gpus")
    for engine_id in ("p.chat", "p.big"):
        gpu = daemon.engine(engine_id)["gpus"][0]
        segment = page.locator(f'[data-gpu="{gpu}"] .bar [data-engine="{engine_id}"]')
        assert segment.count() == 1
        assert engine_id in (segment.get_attribute("title") or "")
    assert page.locator('[data-gpu="0"] .bar [data-kind="free"]').count() == 1
    # The latest events include the engines' starts.
    page.wait_for_selector('table.events tr[data-type="ready"]')
    assert "disabled" in page.inner_text("#gateway-line")
    screenshot(page, "overview-desktop")
    # Dark and light follow the system's setting.
    background = "() => getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(background)
    page.emulate_media(color_scheme="dark")
    assert page.evaluate(background) != light
    screenshot(page, "overview-dark")
    page.emulate_media(color_scheme="light")

    before = page.evaluate(WATCH_RESTARTS, "p.chat")
    killed_at = time.time() * 1000
    os.kill(entry["pid"], signal.SIGKILL)
    page.wait_for_function("() => window.__changedAt !== null", timeout=5000)
    ms = page.evaluate("window.__changedAt") - killed_at
    print(f"exit-to-screen: {ms:.0f} ms")
    assert int(page.evaluate("window.__changedTo")) > int(before)
    assert ms < 1000
    # The crash and the restart are listed with the reason the daemon gave.
    page.wait_for_selector('table.events tr[data-type="exited"]')
    page.wait_for_selector(f'{CELL.format(id="p.chat", col="state")}[data-state="ready"]')
    assert page.inner_text(CELL.format(id="p.chat", col="pid")) != str(entry["pid"])


def test_200_engines_render_and_a_change_rebuilds_only_its_row(dashboard: Dashboard):
    # On-demand engines start no process: 200 rows for the price of none (a preset holds
    # at most 64 engines, so four of 50).
    for preset in range(4):
        engines = [{"name": f"e{i:02d}", "start": "on-demand"} for i in range(50)]
        set_preset(dashboard, f"many{preset}", *engines)
    page = dashboard.open("presets")
    page.wait_for_function("() => window.location.hash === '#/presets'")
    ms = page.evaluate(
        """() => new Promise((resolve) => {
          const started = performance.now();
          window.location.hash = "#/overview";
          const check = () => {
            if (document.querySelectorAll("tr[data-engine]").length >= 200) {
              requestAnimationFrame(() => resolve(performance.now() - started));
            } else requestAnimationFrame(check);
          };
          check();
        })"""
    )
    print(f"200 engines: rendered in {ms:.0f} ms")
    assert ms < 2000
    assert page.locator('td[data-col="state"][data-state="idle"]').count() == 200

    # Mark every row, change one engine's world (a new ad-hoc engine), and see the old rows
    # kept as they were: a status change does not redraw 200 rows.
    page.evaluate("() => document.querySelectorAll('tr[data-engine]').forEach(r => r.__old = 1)")
    answer = dashboard.daemon.put(
        "/v1/engines/solo", {"kind": "llm", "model": "fake/model-1B", "start": "on-demand"}
    )
    assert answer.status_code == 201, answer.text
    page.wait_for_selector(ROW.format(id="solo"))
    kept = page.evaluate(
        "() => [...document.querySelectorAll('tr[data-engine]')].filter(r => r.__old).length"
    )
    assert kept == 200


def test_overview_on_a_phone_fits_the_screen(dashboard: Dashboard):
    set_preset(dashboard, "p", {"name": "chat"}, {"name": "spare", "start": "on-demand"})
    dashboard.daemon.wait_state("p.chat", "ready")
    page = dashboard.open("overview", viewport=PHONE)
    page.wait_for_selector(f'{CELL.format(id="p.chat", col="state")}[data-state="ready"]')
    page.wait_for_selector("[data-gpu]")
    assert_fits_the_screen(page)
    # The table scrolls inside its own box instead.
    wrap = page.evaluate(
        "() => { const w = document.querySelector('#engines').closest('.table-wrap');"
        " return [w.scrollWidth, w.clientWidth]; }"
    )
    assert wrap[0] > wrap[1]
    screenshot(page, "overview-phone")
