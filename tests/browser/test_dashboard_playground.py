"""The Playground in a real Chromium: the daemon's gateway (on a free port) in front of
stand-in engines; chat tokens arrive one by one on screen, embeddings show size and norm."""

from __future__ import annotations

from collections.abc import Callable

from tests.browser.conftest import PHONE, Dashboard, screenshot
from tests.browser.layout import assert_fits_the_screen
from tests.integration.conftest import fake_preset, free_port

TOKENS = 12
INTERVAL_MS = 80

# Every distinct text of the growing answer, with the time it was seen.
WATCH_ANSWER = """() => {
  window.__answers = [];
  const observer = new MutationObserver(() => {
    const all = document.querySelectorAll("#pg-transcript .msg.assistant .content");
    const last = all[all.length - 1];
    if (!last) return;
    const text = last.textContent;
    const seen = window.__answers;
    if (!seen.length || seen[seen.length - 1].text !== text) {
      seen.push({text, at: performance.now()});
    }
  });
  observer.observe(document.getElementById("pg-transcript"),
                   {subtree: true, childList: true, characterData: true});
}"""


def gateway_dashboard(make_dashboard: Callable[..., Dashboard]) -> Dashboard:
    dashboard = make_dashboard(gateway={"enabled": True, "port": free_port()})
    slow = {
        "FAKE_VLLM_STREAM_TOKENS": str(TOKENS),
        "FAKE_VLLM_TOKEN_INTERVAL_MS": str(INTERVAL_MS),
    }
    document = fake_preset(
        "p",
        {"name": "chat", "env": slow},
        {"name": "embed", "kind": "embedding", "runtime": "vllm", "model": "fake/embedder"},
    )
    answer = dashboard.daemon.put("/v1/presets/p", document)
    assert answer.status_code == 200, answer.text
    dashboard.daemon.wait_state("p.chat", "ready")
    dashboard.daemon.wait_state("p.embed", "ready")
    return dashboard


def test_chat_streams_tokens_one_by_one_and_embeddings_show_size_and_norm(
    make_dashboard: Callable[..., Dashboard],
):
    dashboard = gateway_dashboard(make_dashboard)
    page = dashboard.open("playground")
    page.wait_for_selector('#pg-model option[value="fake/model-1B"]', state="attached")
    page.wait_for_selector('#pg-model option[value="fake/embedder"]', state="attached")
    page.select_option("#pg-model", "fake/model-1B")
    assert page.input_value("#pg-mode") == "chat"
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('#view input, #view select, #view textarea')]"
        ".filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)"
    )
    assert unlabelled == []

    page.evaluate(WATCH_ANSWER)
    page.fill("#pg-prompt", "say something")
    page.press("#pg-prompt", "Control+Enter")  # the keyboard sends, as the button does
    page.wait_for_selector("#pg-transcript .msg.assistant[data-done]", timeout=15000)
    answers = page.evaluate("() => window.__answers")
    texts = [answer["text"] for answer in answers]
    final = texts[-1]
    assert len(final.split()) == TOKENS
    # One text per token, each the one before plus a word: the answer grew as they came.
    assert len(texts) >= TOKENS - 1, texts
    assert all(
        later.startswith(earlier) for earlier, later in zip(texts[:-1], texts[1:], strict=True)
    )
    spread = answers[-1]["at"] - answers[0]["at"]
    print(f"{len(texts)} answer states over {spread:.0f} ms")
    assert spread >= (TOKENS - 2) * INTERVAL_MS * 0.8
    assert "say something" in page.inner_text("#pg-transcript .msg.user")
    assert f"{TOKENS} tokens" in page.inner_text("#pg-stats")

    page.select_option("#pg-model", "fake/embedder")
    assert page.input_value("#pg-mode") == "embeddings"
    page.fill("#pg-embed-input", "one\ntwo words\nthree")
    page.click("#pg-embed")
    page.wait_for_selector('#pg-embed-results tr[data-index="2"]')
    sizes = page.locator('#pg-embed-results td[data-col="dims"]').all_inner_texts()
    norms = page.locator('#pg-embed-results td[data-col="norm"]').all_inner_texts()
    assert sizes == ["16", "16", "16"]  # the stand-in's default dimension
    assert all(abs(float(norm) - 1.0) < 1e-3 for norm in norms), norms
    values = page.locator('#pg-embed-results td[data-col="values"]').all_inner_texts()
    assert len(set(values)) == 3  # different texts, different vectors
    page.select_option("#pg-mode", "chat")
    page.select_option("#pg-model", "fake/model-1B")
    screenshot(page, "playground")

    # With the gateway running, the Overview shows its line and each engine's in-flight and
    # queued counts from the gateway's reports (numbers, not the dash of no report).
    page = dashboard.open("overview")
    page.wait_for_selector('#gateway-line [data-state="ready"]')
    assert "requests" in page.inner_text("#gateway-line")
    for col in ("inflight", "queued"):
        cell = page.inner_text(f'tr[data-engine="p.chat"] td[data-col="{col}"]')
        assert cell.isdigit(), (col, cell)

    # The gateway has an engine page of its own: its state and its log (a line per request).
    page = dashboard.open("engine/gateway")
    page.wait_for_selector('#engine-details [data-field="state"] [data-state="ready"]')
    page.wait_for_function(
        "() => document.getElementById('engine-log').textContent.includes('model=')"
    )


def test_playground_says_the_gateway_is_disabled_in_the_api_words(dashboard: Dashboard):
    page = dashboard.open("playground", viewport=PHONE)
    error = page.wait_for_selector("#pg-model-error")
    assert error is not None
    text = error.inner_text()
    assert "the gateway is disabled; set gateway.enabled: true in config.yaml" in text
    assert "409" in text
    assert page.is_disabled("#pg-model")
    assert_fits_the_screen(page)


# A comment, CRLF line ends, an event of two data lines, characters of several bytes.
SSE_TEXT = (
    ': loading p.chat 3 s\n\ndata: {"a": 1}\r\n\r\n'
    "data: one\ndata: two\n\ndata: é ü\n\ndata: [DONE]\n\n"
)
SSE_EVENTS = [
    {"comment": "loading p.chat 3 s"},
    {"data": '{"a": 1}'},
    {"data": "one\ntwo"},
    {"data": "é ü"},
    {"data": "[DONE]"},
]

# Reads each chunking of the bytes through the Playground's SSE reader.
READ_CHUNKINGS = """async (chunkings) => {
  const { serverSentEvents } = await import("/ui/js/sse.js");
  const results = [];
  for (const chunks of chunkings) {
    const body = new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new Uint8Array(chunk));
        controller.close();
      },
    });
    const events = [];
    for await (const event of serverSentEvents(new Response(body))) events.push(event);
    results.push(events);
  }
  return results;
}"""


def test_the_stream_reader_finds_the_same_events_wherever_the_chunks_break(
    dashboard: Dashboard,
):
    page = dashboard.open("playground")
    raw = SSE_TEXT.encode()
    chunkings = [[list(raw)], [[byte] for byte in raw]]
    chunkings += [[list(raw[:cut]), list(raw[cut:])] for cut in range(1, len(raw))]
    results = page.evaluate(READ_CHUNKINGS, chunkings)
    for chunks, events in zip(chunkings, results, strict=True):
        assert events == SSE_EVENTS, [bytes(chunk) for chunk in chunks]
