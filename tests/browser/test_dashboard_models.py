"""The Models view: the models on disk, delete (refused while used), downloads live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import PHONE, Dashboard, screenshot
from tests.browser.fake_hub import FakeRepo, fake_hub
from tests.integration.test_models import closed_port
from tests.unit.test_models import EMBEDDER, LLM, fake_cache

TIMEOUT = 10_000  # ms


def models_dashboard(
    make_dashboard: Callable[..., Dashboard], cache: Path, **env: str
) -> Dashboard:
    dashboard = make_dashboard(start=False)
    # Its own cache, and a hub that refuses at once: nothing here may reach the network.
    dashboard.daemon.extra_env.update(
        {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", **env}
    )
    dashboard.daemon.start()
    return dashboard


def model_row(page: Any, model: str) -> Any:
    return page.locator(f'#models tr[data-model="{model}"]')


def test_models_are_listed_and_delete_is_refused_while_an_engine_uses_one(
    make_dashboard: Callable[..., Dashboard], tmp_path: Path
) -> None:
    cache = fake_cache(tmp_path)
    dashboard = models_dashboard(make_dashboard, cache)
    daemon = dashboard.daemon
    assert daemon.put("/v1/engines/tiny", {"kind": "llm", "model": LLM}).status_code == 201
    daemon.wait_state("tiny", "ready")
    page = dashboard.open("models")

    llm = model_row(page, LLM)
    expect(llm.locator('[data-col="engines"]')).to_have_text("tiny", timeout=TIMEOUT)
    expect(llm.locator('[data-col="source"]')).to_have_text("hub-cache")
    expect(llm.locator('[data-col="size"]')).to_contain_text("KB")
    expect(llm.locator('[data-col="last-used"]')).to_contain_text("ago")
    expect(model_row(page, EMBEDDER).locator('[data-col="last-used"]')).to_have_text("never")
    screenshot(page, "models")

    llm.get_by_role("button", name=f"Delete {LLM}").click()
    page.locator("#confirm-yes").click()
    refusal = llm.locator(".api-error")
    expect(refusal).to_contain_text("tiny", timeout=TIMEOUT)
    expect(refusal).to_contain_text("conflict")
    screenshot(page, "models-refused")
    snapshot_dir = cache / "models--acme--tiny-llm"
    assert snapshot_dir.is_dir()

    # An unused model goes, from the disk and from the list.
    embedder = model_row(page, EMBEDDER)
    embedder.get_by_role("button", name=f"Delete {EMBEDDER}").click()
    page.locator("#confirm-yes").click()
    expect(embedder).to_have_count(0, timeout=TIMEOUT)
    assert not (cache / "models--acme--tiny-embedder").exists()
    expect(llm).to_be_visible()
    expect(refusal).to_contain_text("tiny")  # the list was drawn again; the reason stays

    # Once the engine is gone the model is free: its engines cell empties live.
    assert daemon.delete("/v1/engines/tiny").status_code == 200
    expect(llm.locator('[data-col="engines"]')).to_have_text("", timeout=TIMEOUT)
    expect(refusal).to_be_empty()


def test_a_cancelled_delete_keeps_the_model(
    make_dashboard: Callable[..., Dashboard], tmp_path: Path
) -> None:
    cache = fake_cache(tmp_path)
    dashboard = models_dashboard(make_dashboard, cache)
    page = dashboard.open("models", viewport=PHONE)
    embedder = model_row(page, EMBEDDER)
    embedder.get_by_role("button", name=f"Delete {EMBEDDER}").click()
    page.locator("#confirm-no").click()
    expect(page.locator("dialog")).to_have_count(0)
    expect(embedder).to_be_visible()
    assert (cache / "models--acme--tiny-embedder").is_dir()
    screenshot(page, "models-phone")


def test_a_download_that_fails_shows_the_reason_live(
    make_dashboard: Callable[..., Dashboard], tmp_path: Path
) -> None:
    dashboard = models_dashboard(make_dashboard, fake_cache(tmp_path))
    page = dashboard.open("models")
    page.get_by_label("Model id").fill("acme/absent")
    page.get_by_label("Only files matching").fill("*.json, *.safetensors")
    page.get_by_role("button", name="Download").click()
    job = page.locator('#downloads tr[data-model="acme/absent"]')
    expect(job).to_have_attribute("data-state", "failed", timeout=TIMEOUT)
    expect(job.locator('[data-col="message"]')).to_contain_text("is not reachable")

    # A bad id is the API's 400, next to the form.
    page.get_by_label("Model id").fill("../etc")
    page.get_by_role("button", name="Download").click()
    expect(page.locator("#download-error")).to_contain_text("model id", timeout=TIMEOUT)


def test_an_offline_daemon_downloads_from_its_cache_or_says_why_not(
    make_dashboard: Callable[..., Dashboard], tmp_path: Path
) -> None:
    dashboard = models_dashboard(make_dashboard, fake_cache(tmp_path), HF_HUB_OFFLINE="1")
    page = dashboard.open("models")
    page.get_by_label("Model id").fill("acme/absent")
    page.get_by_role("button", name="Download").click()
    expect(page.locator("#download-error")).to_contain_text("hub_offline", timeout=TIMEOUT)

    page.get_by_label("Model id").fill(LLM)
    page.get_by_role("button", name="Download").click()
    job = page.locator(f'#downloads tr[data-model="{LLM}"]')
    expect(job).to_have_attribute("data-state", "done", timeout=TIMEOUT)
    expect(job.locator('[data-col="message"]')).to_contain_text("done in")
    expect(page.locator("#download-error")).to_be_empty()


def test_a_download_shows_its_progress_live_and_the_model_arrives(
    make_dashboard: Callable[..., Dashboard], tmp_path: Path
) -> None:
    # Two files of 1 MB, done after 5.5 s and 6.5 s: the daemon reports progress at most
    # every 5 s, so the first one finishing gives one progress event at 50 %.
    weights = {"a.safetensors": b"\0" * 1_000_000, "b.safetensors": b"\1" * 1_000_000}
    repo = FakeRepo("acme/slow", weights, {"a.safetensors": 5.5, "b.safetensors": 6.5})
    with fake_hub(repo) as endpoint:
        dashboard = models_dashboard(make_dashboard, fake_cache(tmp_path), HF_ENDPOINT=endpoint)
        page = dashboard.open("models")
        page.get_by_label("Model id").fill("acme/slow")
        page.get_by_role("button", name="Download").click()
        job = page.locator('#downloads tr[data-model="acme/slow"]')
        expect(job).to_have_attribute("data-state", "running", timeout=TIMEOUT)
        expect(job.locator('[data-col="message"]')).to_contain_text("started")
        progress = job.locator('[data-col="progress"]')
        expect(progress).to_contain_text("50% (1.0 MB of 2.0 MB)", timeout=TIMEOUT)
        expect(job.locator('[data-col="message"]')).to_contain_text("50%")
        screenshot(page, "models-download")
        expect(job).to_have_attribute("data-state", "done", timeout=TIMEOUT)
        expect(progress.locator("progress")).to_have_attribute("value", "100")
        arrived = model_row(page, "acme/slow")
        expect(arrived.locator('[data-col="size"]')).to_have_text("2.0 MB", timeout=TIMEOUT)
