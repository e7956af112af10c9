"""The Presets view: a dry-run plan first, then the apply and its rollout live; unset."""

from __future__ import annotations

from typing import Any

import yaml
from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE, Dashboard, screenshot
from tests.integration.conftest import Daemon, fake_preset

TIMEOUT = 15_000  # ms


def generation(daemon: Daemon) -> int:
    return daemon.get("/v1/status").json()["generation"]


def file_preset(daemon: Daemon, name: str, *engines: dict[str, Any]) -> None:
    folder = daemon.home / "presets"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(fake_preset(name, *engines)))


def paste(page: Page, document: dict[str, Any] | str) -> None:
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    page.get_by_label("Preset document (YAML)").fill(text)


def rollout_engine(page: Page, engine: str) -> Any:
    return page.locator(f'#rollout tr[data-engine="{engine}"] [data-col="state"]')


def test_a_pasted_preset_is_planned_then_applied_until_every_engine_is_ready(
    dashboard: Dashboard,
) -> None:
    daemon = dashboard.daemon
    page = dashboard.open("presets")
    paste(page, fake_preset("duo", {"name": "chat"}, {"name": "coder", "model": "fake/coder-1B"}))
    expect(page.get_by_label("Preset name")).to_have_value("duo")
    page.get_by_role("button", name="Dry run", exact=True).click()

    plan = page.locator("#plan")
    expect(plan.locator("tr[data-plan-engine]")).to_have_count(2, timeout=TIMEOUT)
    for engine in ("duo.chat", "duo.coder"):
        step = plan.locator(f'tr[data-plan-engine="{engine}"]')
        expect(step.locator('[data-col="action"]')).to_have_text("start")
        expect(step.locator('[data-col="gpus"]')).to_contain_text("GPU")
    # A dry run changes nothing.
    assert generation(daemon) == 0 and daemon.get("/v1/status").json()["engines"] == []
    screenshot(page, "presets-plan")

    # The plan's apply button has the focus: Enter applies it, no mouse needed.
    expect(page.locator("#plan-apply")).to_be_focused()
    page.keyboard.press("Enter")
    rollout = page.locator("#rollout")
    expect(rollout).to_have_attribute("data-generation", "1", timeout=TIMEOUT)
    for engine in ("duo.chat", "duo.coder"):
        expect(rollout_engine(page, engine)).to_have_attribute(
            "data-state", "ready", timeout=TIMEOUT
        )
    expect(rollout).to_have_attribute("data-state", "healthy", timeout=TIMEOUT)
    expect(page.locator('#presets tr[data-preset="duo"] [data-col="active"]')).to_have_text(
        "active"
    )
    assert generation(daemon) == 1
    screenshot(page, "presets")


def test_a_bad_document_shows_the_field_error_next_to_the_editor_and_changes_nothing(
    dashboard: Dashboard,
) -> None:
    daemon = dashboard.daemon
    page = dashboard.open("presets", viewport=PHONE)
    paste(page, fake_preset("bad", {"name": "chat"}))
    page.get_by_role("button", name="Dry run", exact=True).click()
    expect(page.locator("#plan-apply")).to_be_visible(timeout=TIMEOUT)
    # Editing the text makes that plan stale: it goes, the new text needs its own dry run.
    paste(page, fake_preset("bad", {"name": "chat", "tensor_parallel": 0}))
    expect(page.locator("#plan-section")).to_be_hidden()
    page.get_by_role("button", name="Dry run", exact=True).click()
    error = page.locator("#preset-yaml + .api-error, #preset-error")
    expect(page.locator("#preset-error")).to_contain_text(
        "engines[0].tensor_parallel: must be an integer >= 1, got 0", timeout=TIMEOUT
    )
    expect(error.first).to_contain_text("invalid_spec")
    expect(page.locator("#plan-section")).to_be_hidden()
    screenshot(page, "presets-error-phone")

    # A YAML syntax error is the API's too, with its line and column.
    paste(page, "version: 1\nname: bad\nengines: [\n")
    page.get_by_role("button", name="Dry run", exact=True).click()
    expect(page.locator("#preset-error")).to_contain_text("line", timeout=TIMEOUT)
    assert generation(daemon) == 0
    assert daemon.get("/v1/presets/bad").status_code == 404


def test_a_file_preset_is_shown_applied_by_name_and_unset(dashboard: Dashboard) -> None:
    daemon = dashboard.daemon
    file_preset(daemon, "filed", {"name": "one"})
    page = dashboard.open("presets")
    listed = page.locator('#presets tr[data-preset="filed"]')
    expect(listed.locator('[data-col="source"]')).to_have_text("file", timeout=TIMEOUT)

    listed.get_by_role("button", name="Show preset filed").click()
    shown = page.locator("#preset-yaml-view")
    expect(shown).to_contain_text("name: filed")
    expect(shown).to_contain_text("model: fake/model-1B")
    page.locator("#show-dry-run").click()
    expect(page.locator('#plan tr[data-plan-engine="filed.one"]')).to_be_visible(timeout=TIMEOUT)
    page.locator("#plan-apply").click()
    expect(rollout_engine(page, "filed.one")).to_have_attribute(
        "data-state", "ready", timeout=TIMEOUT
    )
    # Applied by name, it stays the file's preset.
    assert daemon.get("/v1/presets/filed").json()["source"] == "file"

    unset = listed.get_by_role("button", name="Unset preset filed")
    expect(unset).to_be_visible(timeout=TIMEOUT)
    unset.click()
    page.locator("#confirm-yes").click()
    expect(page.locator("#rollout")).to_have_attribute("data-generation", "2", timeout=TIMEOUT)
    expect(rollout_engine(page, "filed.one")).to_have_attribute(
        "data-state", "removed", timeout=TIMEOUT
    )
    expect(listed).to_have_attribute("data-active", "false", timeout=TIMEOUT)
    assert daemon.get("/v1/status").json()["engines"] == []


def test_a_failing_rollout_shows_its_rollback(dashboard: Dashboard) -> None:
    daemon = dashboard.daemon
    file_preset(daemon, "crashy", {"name": "boom", "env": {"FAKE_VLLM_CRASH_AFTER": "0.2"}})
    page = dashboard.open("presets", viewport=PHONE)
    page.locator('#presets tr[data-preset="crashy"]').get_by_role("button", name="Show").click()
    page.locator("#show-dry-run").click()
    page.locator("#plan-apply").click()
    rollout = page.locator("#rollout")
    expect(rollout).to_have_attribute("data-state", "failed", timeout=TIMEOUT)
    expect(page.locator("#rollout-summary")).to_contain_text("crashy.boom")
    undo = page.locator("#rollout-rollback [data-rollback-generation]")
    expect(undo).to_have_attribute("data-rollback-generation", "2", timeout=TIMEOUT)
    expect(undo).to_contain_text("rollback of 1")
    screenshot(page, "presets-rollback-phone")
    # The rollback removed the preset it set.
    expect(rollout_engine(page, "crashy.boom")).to_have_attribute(
        "data-state", "removed", timeout=TIMEOUT
    )
