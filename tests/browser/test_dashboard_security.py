"""Another origin on the same host holds the browser's session cookie and still cannot
mutate; the first load stays small."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.browser.conftest import Dashboard
from tests.integration.conftest import fake_preset

# A page on another port of 127.0.0.1: the same *site* as the daemon, so SameSite=Strict
# alone lets the browser send the cookie; the daemon must refuse on its own.
EVIL_PAGE = """<!doctype html><html><body>
<form id="form" method="post" action="{api}/v1/rollback" target="sink"
      enctype="text/plain"><input name='{{"to": 0, "x": "' value='"}}'></form>
<iframe name="sink" id="sink"></iframe>
<script>
(async () => {{
  const results = [];
  for (const path of ["/v1/rollback", "/v1/plan"]) {{
    try {{
      await fetch("{api}" + path, {{method: "POST", mode: "no-cors", credentials: "include",
        headers: {{"Content-Type": "text/plain"}}, body: '{{"to": 0}}'}});
      results.push("sent");
    }} catch (error) {{ results.push(String(error)); }}
  }}
  const sink = document.getElementById("sink");
  sink.addEventListener("load", () => {{ window.results = results; window.done = true; }});
  document.getElementById("form").submit();
}})();
</script></body></html>"""


class _Page(http.server.BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.html)))
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def evil_site(dashboard: Dashboard) -> Iterator[str]:
    html = EVIL_PAGE.format(api=dashboard.daemon.url).encode()
    handler = type("EvilPage", (_Page,), {"html": html})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _refused_rollbacks(dashboard: Dashboard) -> float:
    text = dashboard.daemon.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("sagellm_api_requests_total{") and 'route="/v1/rollback"' in line:
            if 'status="403"' in line or 'status="401"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_page_of_another_origin_cannot_mutate_with_the_session_cookie(
    dashboard: Dashboard, evil_site: str
) -> None:
    daemon = dashboard.daemon
    assert daemon.put("/v1/presets/keep", fake_preset("keep", {"name": "chat"})).status_code == 200
    generation = daemon.get("/v1/status").json()["generation"]
    page = dashboard.open()  # the context now holds a session cookie for the daemon
    page.goto(evil_site)
    page.wait_for_function("window.done === true", timeout=10_000)
    status = daemon.get("/v1/status").json()
    assert status["generation"] == generation
    assert status["presets"] == ["keep"]
    # The requests did reach the daemon (so this test can fail) and were refused there.
    assert _refused_rollbacks(dashboard) >= 2


def test_the_first_load_is_under_300_kb(dashboard: Dashboard) -> None:
    page = dashboard.new_page()
    page.goto(dashboard.sign_in_url())
    page.wait_for_selector('#view[data-view="overview"]')
    page.wait_for_load_state("load")
    transferred = page.evaluate(
        """() => performance.getEntries()
            .filter((e) => e.entryType === "navigation" || e.entryType === "resource")
            .reduce((sum, e) => sum + (e.transferSize || 0), 0)"""
    )
    decoded = page.evaluate(
        """() => performance.getEntries()
            .filter((e) => e.entryType === "navigation" || e.entryType === "resource")
            .reduce((sum, e) => sum + (e.decodedBodySize || 0), 0)"""
    )
    print(f"first load: {transferred / 1000:.1f} KB transferred ({decoded / 1000:.1f} KB decoded)")
    assert 0 < transferred < 300_000
