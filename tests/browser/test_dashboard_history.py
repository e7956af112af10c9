"""The History view: generations live, the difference between two, and a rollback."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE, Dashboard, screenshot
from tests.integration.conftest import Daemon, fake_preset

TIMEOUT = 10_000  # ms


def set_preset(daemon: Daemon, *engines: dict[str, Any]) -> int:
    answer = daemon.put("/v1/presets/p", fake_preset("p", *engines))
    assert answer.status_code == 200, answer.text
    return answer.json()["generation"]


def desired_engines(daemon: Daemon) -> set[str]:
    return {engine["id"] for engine in daemon.get("/v1/status").json()["engines"]}


def row(page: Page, generation: int) -> Any:
    return page.locator(f'#generations tr[data-generation="{generation}"]')


def test_a_rollback_from_history_makes_a_new_generation_and_changes_the_engines(
    dashboard: Dashboard,
) -> None:
    daemon = dashboard.daemon
    first = set_preset(daemon, {"name": "a"})
    daemon.wait_state("p.a", "ready")
    page = dashboard.open("history")
    expect(row(page, first)).to_be_visible(timeout=TIMEOUT)

    # A change made elsewhere shows up without a reload.
    second = set_preset(daemon, {"name": "a"}, {"name": "b"})
    expect(row(page, second)).to_be_visible(timeout=TIMEOUT)
    expect(row(page, second).locator('[data-col="engines"]')).to_have_text("2")
    expect(row(page, second).locator('[data-col="state"]')).to_have_text("healthy", timeout=TIMEOUT)
    screenshot(page, "history")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "history-dark")
    page.emulate_media(color_scheme="light")

    row(page, first).get_by_role("button", name=f"Roll back to generation {first}").click()
    page.locator("#confirm-yes").click()
    third = second + 1
    expect(row(page, third)).to_be_visible(timeout=TIMEOUT)
    expect(row(page, third).locator('[data-col="cause"]')).to_contain_text("rollback")
    expect(row(page, third).locator('[data-col="engines"]')).to_have_text("1")
    expect(page.locator("#rollback-notice")).to_contain_text(f"back to generation {first}")
    # The rollback's own rollout: p.b leaves, and the generation is judged healthy.
    rollout = page.locator("#rollout")
    expect(rollout).to_have_attribute("data-generation", str(third))
    removed = rollout.locator('tr[data-engine="p.b"] [data-col="state"]')
    expect(removed).to_have_attribute("data-state", "removed", timeout=TIMEOUT)
    expect(rollout).to_have_attribute("data-state", "healthy", timeout=TIMEOUT)
    assert daemon.get("/v1/status").json()["generation"] == third
    daemon.wait_for(lambda: desired_engines(daemon) == {"p.a"}, 10, "p.b to leave")


def test_a_cancelled_rollback_changes_nothing(dashboard: Dashboard) -> None:
    daemon = dashboard.daemon
    first = set_preset(daemon, {"name": "a"})
    second = set_preset(daemon, {"name": "a"}, {"name": "b"})
    page = dashboard.open("history")
    expect(row(page, second)).to_be_visible(timeout=TIMEOUT)
    # The current generation is where a rollback would go already.
    expect(row(page, second).get_by_role("button", name="Roll back to generation")).to_be_disabled()
    # By keyboard: focus the button, Enter opens the confirmation, Escape cancels it.
    row(page, first).get_by_role("button", name=f"Roll back to generation {first}").focus()
    page.keyboard.press("Enter")
    expect(page.locator("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog")).to_have_count(0)
    assert daemon.get("/v1/status").json()["generation"] == second


def test_the_difference_between_two_generations(dashboard: Dashboard) -> None:
    daemon = dashboard.daemon
    first = set_preset(daemon, {"name": "a"}, {"name": "c"})
    second = set_preset(
        daemon,
        {"name": "a", "model": "fake/model-2B", "label": "big"},
        {"name": "c"},
        {"name": "b"},
    )
    third = set_preset(daemon, {"name": "b"}, {"name": "c"})
    page = dashboard.open("history", viewport=PHONE)
    expect(row(page, third)).to_be_visible(timeout=TIMEOUT)
    diff = page.locator("#diff")

    page.get_by_label(f"compare {first}", exact=True).check()
    page.get_by_label(f"compare {second}", exact=True).check()
    expect(diff).to_have_attribute("data-from", str(first))
    expect(diff).to_have_attribute("data-to", str(second))
    expect(diff.locator('li[data-diff="added"]')).to_have_count(1)
    expect(diff.locator('li[data-diff="added"][data-engine="p.b"]')).to_be_visible()
    expect(diff.locator('li[data-diff="removed"]')).to_have_count(0)
    changed = diff.locator('tr[data-diff="changed"][data-engine="p.a"]')
    fields = sorted(changed.evaluate_all("rows => rows.map(row => row.dataset.field)"))
    assert fields == ["label", "model"]
    model = diff.locator('tr[data-diff="changed"][data-field="model"]')
    expect(model).to_contain_text('"fake/model-1B"')
    expect(model).to_contain_text('"fake/model-2B"')
    expect(diff.locator('tr[data-engine="p.c"]')).to_have_count(0)
    screenshot(page, "history-diff-phone")

    # A third pick lets go of the earliest: now from the second to the third.
    page.get_by_label(f"compare {third}", exact=True).check()
    expect(page.get_by_label(f"compare {first}", exact=True)).not_to_be_checked()
    expect(diff).to_have_attribute("data-from", str(second))
    expect(diff).to_have_attribute("data-to", str(third))
    expect(diff.locator('li[data-diff="removed"][data-engine="p.a"]')).to_be_visible()
    expect(diff.locator('li[data-diff="added"]')).to_have_count(0)
    expect(diff.locator('tr[data-diff="changed"]')).to_have_count(0)


def test_the_diff_compares_values_not_key_order(dashboard: Dashboard) -> None:
    page = dashboard.open("history")
    found = page.evaluate(
        """async () => {
          const { diffGenerations } = await import("./js/gendiff.js");
          const engine = (id, spec) => ({ id, preset: null, spec });
          const from = { engines: [
            engine("x", { model: "m", env: { A: "1", B: "2" }, extra_args: ["--a", "--b"] }),
            engine("y", { model: "m", metadata: { team: "a" } }),
          ] };
          const to = { engines: [
            engine("x", { env: { B: "2", A: "1" }, model: "m", extra_args: ["--a", "--b"] }),
            engine("y", { model: "m", metadata: { team: "b" }, label: "new" }),
          ] };
          return diffGenerations(from, to);
        }"""
    )
    assert found["added"] == [] and found["removed"] == []
    assert found["changed"] == [
        {
            "id": "y",
            "fields": [
                {"field": "label", "before": None, "after": "new"},  # not set before
                {"field": "metadata", "before": {"team": "a"}, "after": {"team": "b"}},
            ],
        }
    ]
