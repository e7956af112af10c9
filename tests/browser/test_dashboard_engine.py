"""The Engine page in a real Chromium against a real daemon with stand-in engines: spec,
memory estimate, events, a log followed live, restart and remove behind a confirmation,
and the API's refusal shown next to the button."""

from __future__ import annotations

import time
import uuid

import httpx
from playwright.sync_api import Page, Request

from tests.browser.conftest import PHONE, Dashboard, screenshot
from tests.browser.layout import assert_fits_the_screen
from tests.integration.conftest import fake_preset

# The stand-in writes one log line per request it serves (its health probes too).
LOGGING = {"env": {"FAKE_VLLM_ACCESS_LOG": "1"}}


def ready_engine(dashboard: Dashboard, preset: str = "p", **spec: object) -> dict:
    document = fake_preset(preset, {"name": "chat", **LOGGING, **spec})
    answer = dashboard.daemon.put(f"/v1/presets/{preset}", document)
    assert answer.status_code == 200, answer.text
    return dashboard.daemon.wait_state(f"{preset}.chat", "ready")


def field(page: Page, name: str) -> str:
    return page.inner_text(f'#engine-details dd[data-field="{name}"]')


def test_engine_page_shows_spec_memory_events_and_follows_the_log(dashboard: Dashboard):
    entry = ready_engine(dashboard)
    page = dashboard.open("engine/p.chat")
    page.wait_for_selector('#engine-details [data-field="state"] [data-state="ready"]')
    assert field(page, "pid") == str(entry["pid"])
    assert field(page, "model") == "fake/model-1B"
    spec = page.inner_text("#engine-spec")
    assert (
        "name: chat" in spec and "model: fake/model-1B" in spec and "FAKE_VLLM_ACCESS_LOG" in spec
    )
    estimate = entry["memory_estimate"]
    assert page.inner_text('[data-field="estimate-source"]') == estimate["source"]
    assert page.inner_text('[data-field="estimate-detail"]') == estimate["detail"]
    assert "GPU" in page.inner_text('[data-field="reserved"]')
    page.wait_for_selector('table.events tr[data-type="ready"]')
    page.wait_for_function(
        "() => document.getElementById('engine-log').textContent.includes('fake vLLM serving')"
    )

    # A line the engine writes now appears without a reload (the page keeps its state).
    page.evaluate("() => { window.__samePage = true; }")
    marker = uuid.uuid4().hex
    written_at = time.monotonic()
    httpx.get(f"http://127.0.0.1:{entry['port']}/health?mark={marker}", timeout=5)
    page.wait_for_function(
        "(marker) => document.getElementById('engine-log').textContent.includes(marker)",
        arg=marker,
        timeout=5000,
    )
    print(f"log line to screen: {(time.monotonic() - written_at) * 1000:.0f} ms")
    assert page.evaluate("() => window.__samePage") is True
    assert page.inner_text("#log-state") == "following"
    screenshot(page, "engine")


def test_restart_asks_first_then_restarts(dashboard: Dashboard):
    entry = ready_engine(dashboard)
    page = dashboard.open("engine/p.chat")
    page.wait_for_selector('#engine-details [data-field="state"] [data-state="ready"]')
    restarts: list[Request] = []
    page.on(
        "request",
        lambda request: restarts.append(request) if request.url.endswith("/restart") else None,
    )

    page.click("#engine-restart")
    page.wait_for_selector("dialog[open]")
    page.click("#confirm-no")
    page.wait_for_selector("dialog", state="detached")
    assert field(page, "pid") == str(entry["pid"])

    page.click("#engine-restart")
    page.wait_for_selector("dialog[open]")
    page.click("#confirm-yes")
    page.wait_for_function(
        "(old) => { const dd = document.querySelector('#engine-details [data-field=\"pid\"]');"
        " return dd && dd.textContent !== '' && dd.textContent !== old; }",
        arg=str(entry["pid"]),
        timeout=10000,
    )
    assert "restart requested" in page.inner_text("#engine-action-result")
    assert len(restarts) == 1 and restarts[0].method == "POST"
    new_pid = dashboard.daemon.engine("p.chat")["pid"]
    assert new_pid != entry["pid"]
    page.wait_for_selector('#engine-details [data-field="state"] [data-state="ready"]')
    assert field(page, "pid") == str(new_pid)


def test_remove_shows_the_api_refusal_for_a_preset_engine_and_removes_an_ad_hoc_one(
    dashboard: Dashboard,
):
    ready_engine(dashboard)
    page = dashboard.open("engine/p.chat")
    page.wait_for_selector('#engine-details [data-field="state"] [data-state="ready"]')
    page.click("#engine-remove")
    page.click("#confirm-yes")
    error = page.wait_for_selector('section[aria-label="Actions"] .api-error')
    assert error is not None
    text = error.inner_text()
    assert "preset unset p" in text and "conflict" in text and "409" in text
    assert dashboard.daemon.engine("p.chat")["state"] == "ready"

    answer = dashboard.daemon.put(
        "/v1/engines/solo", {"kind": "llm", "model": "fake/model-1B", "start": "on-demand"}
    )
    assert answer.status_code == 201, answer.text
    page = dashboard.open("engine/solo")
    page.wait_for_selector('#engine-details [data-field="state"] [data-state="idle"]')
    page.click("#engine-remove")
    page.click("#confirm-yes")
    page.wait_for_selector("#engine-gone:not([hidden])")
    assert "removed in generation" in page.inner_text("#engine-action-result")
    assert dashboard.daemon.get("/v1/engines/solo").status_code == 404


def test_engine_page_on_a_phone_fits_the_screen(dashboard: Dashboard):
    ready_engine(dashboard)
    page = dashboard.open("engine/p.chat", viewport=PHONE)
    page.wait_for_selector('#engine-details [data-field="state"] [data-state="ready"]')
    page.wait_for_function(
        "() => document.getElementById('engine-log').textContent.includes('fake vLLM serving')"
    )
    assert_fits_the_screen(page)
