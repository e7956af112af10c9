"""A disaggregated engine on the Overview: its prefill and decode instances sit under it,
each with its own row kept live (a SIGKILLed prefill's restart count changes on its row)."""

from __future__ import annotations

import os
import signal

from tests.browser.conftest import Dashboard, screenshot
from tests.integration.conftest import fake_preset

PREFILL, DECODE = "p.chat.prefill-0", "p.chat.decode-0"
CELL = 'tr[data-engine="{id}"] td[data-col="{col}"]'


def test_instances_show_under_their_engine_and_follow_a_crash(dashboard: Dashboard) -> None:
    engine = {"name": "chat", "gpu_memory_gb": 10, "disaggregated": {}}
    answer = dashboard.daemon.put("/v1/presets/p", fake_preset("p", engine))
    assert answer.status_code == 200, answer.text
    page = dashboard.open()
    for engine_id in ("p.chat", PREFILL, DECODE):
        page.wait_for_selector(CELL.format(id=engine_id, col="state") + '[data-state="ready"]')
    ids = page.eval_on_selector_all("#engines tbody tr", "rows => rows.map(r => r.dataset.engine)")
    assert ids == ["p.chat", DECODE, PREFILL] or ids == ["p.chat", PREFILL, DECODE], ids
    roles = page.eval_on_selector_all("#engines tbody tr", "rows => rows.map(r => r.dataset.role)")
    assert roles[0] == "" and sorted(roles[1:]) == ["decode", "prefill"]
    gpus = {
        engine_id: page.inner_text(CELL.format(id=engine_id, col="gpus"))
        for engine_id in (PREFILL, DECODE)
    }
    assert gpus[PREFILL] and gpus[DECODE] and gpus[PREFILL] != gpus[DECODE], gpus
    screenshot(page, "overview-disaggregated")

    pid = int(page.inner_text(CELL.format(id=PREFILL, col="pid")))
    decode_pid = page.inner_text(CELL.format(id=DECODE, col="pid"))
    os.kill(pid, signal.SIGKILL)
    page.wait_for_function(
        "(sel) => document.querySelector(sel).textContent === '1'",
        arg=CELL.format(id=PREFILL, col="restarts"),
        timeout=5_000,
    )
    page.wait_for_selector(CELL.format(id=PREFILL, col="state") + '[data-state="ready"]')
    assert page.inner_text(CELL.format(id=DECODE, col="pid")) == decode_pid
    assert page.inner_text(CELL.format(id=DECODE, col="restarts")) == "0"
