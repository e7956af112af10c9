"""The dashboard's sign-in over a real daemon: one-time codes, the session cookie, the /ui
files behind it, and the API taking the cookie (with CSRF proof on mutations)."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Daemon

CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " frame-ancestors 'none'"
)
SPEC = {"model": "fake/solo-1B", "gpu_memory_gb": 10}


@pytest.fixture
def daemon(module_daemon: Daemon) -> Daemon:
    """The module's one daemon: sessions and codes are per client, and a test that creates
    an engine names it for itself. The tests that restart the daemon make their own."""
    return module_daemon


def browser(daemon: Daemon, cookie: str | None = None) -> httpx.Client:
    """A client without a session, or carrying this session cookie value."""
    cookies = {f"sagellm_session_{daemon.port}": cookie} if cookie is not None else None
    return httpx.Client(base_url=daemon.url, timeout=30, cookies=cookies)


def signed_in(daemon: Daemon) -> tuple[httpx.Client, str]:
    """A client holding a session cookie (by a one-time code), and the session's CSRF value."""
    answer = daemon.post("/v1/ui/codes")
    assert answer.status_code == 200, answer.text
    client = browser(daemon)
    exchanged = client.get(answer.json()["url"])
    assert exchanged.status_code == 303, exchanged.text
    session = client.get("/ui/session")
    assert session.status_code == 200, session.text
    return client, session.json()["csrf"]


def cookie_of(client: httpx.Client, daemon: Daemon) -> str:
    return client.cookies[f"sagellm_session_{daemon.port}"]


def engine_ids(daemon: Daemon) -> list[str]:
    return [engine["id"] for engine in daemon.get("/v1/engines").json()["engines"]]


def generation(daemon: Daemon) -> int:
    return daemon.get("/v1/status").json()["generation"]


def assert_signin_page(response: httpx.Response, status: int = 401) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<h1>Sign in to sagellm</h1>" in page
    assert '<form method="post" action="/ui/signin">' in page
    assert 'id="token" name="token" type="password"' in page and '<label for="token">' in page
    assert 'id="sign-in"' in page and 'name="next"' in page
    assert "<script" not in page
    assert response.headers["content-security-policy"] == CSP
    return page


def test_a_code_signs_in_once_with_a_strict_httponly_cookie(daemon: Daemon):
    answer = daemon.post("/v1/ui/codes").json()
    assert answer["url"] == f"{daemon.url}/ui/?code={answer['code']}"
    assert answer["expires_at"].endswith("Z")
    client = browser(daemon)
    exchanged = client.get("/ui/", params={"code": answer["code"], "x": "1"})
    assert exchanged.status_code == 303
    assert exchanged.headers["location"] == "/ui/?x=1"
    cookie = exchanged.headers["set-cookie"]
    assert cookie.startswith(f"sagellm_session_{daemon.port}=")
    attributes = [part.strip() for part in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Max-Age=604800" in attributes
    assert client.get("/ui/").status_code == 200
    again = browser(daemon).get(answer["url"])
    page = assert_signin_page(again)
    assert 'id="sign-in-error"' in page and "used already or has expired" in page
    assert "set-cookie" not in again.headers


def test_codes_need_the_token(daemon: Daemon):
    assert daemon.client.post("/v1/ui/codes").status_code == 401
    wrong = daemon.client.post("/v1/ui/codes", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_without_a_session_every_page_is_the_signin_form_and_every_file_401(daemon: Daemon):
    client = browser(daemon)
    redirect = client.get("/ui")
    assert (redirect.status_code, redirect.headers["location"]) == (308, "/ui/")
    with_code = client.get("/ui", params={"code": "abc"})
    assert with_code.headers["location"] == "/ui/?code=abc"
    for path in ("/ui/", "/ui/index.html", "/ui/nothing-here.html"):
        page = assert_signin_page(client.get(path))
        assert 'id="sign-in-error"' not in page
    for path in ("/ui/app.css", "/ui/js/main.js", "/ui/js/api.js", "/ui/missing.js"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["content-type"].startswith("text/plain")
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert refused.headers["referrer-policy"] == "same-origin"
    session = client.get("/ui/session")
    assert session.status_code == 401 and session.json()["error"]["code"] == "unauthorized"


def test_with_a_session_the_files_are_served_with_their_headers(daemon: Daemon):
    client, _ = signed_in(daemon)
    index = client.get("/ui/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["cache-control"] == "no-cache"
    assert index.headers["content-security-policy"] == CSP
    assert index.headers["x-content-type-options"] == "nosniff"
    assert index.headers["referrer-policy"] == "same-origin"
    assert index.text == client.get("/ui/index.html").text
    script = client.get("/ui/js/main.js", headers={"accept-encoding": "identity"})
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "content-encoding" not in script.headers
    etag = script.headers["etag"]
    assert client.get("/ui/js/main.js", headers={"if-none-match": etag}).status_code == 304
    raw = client.build_request("GET", "/ui/js/main.js", headers={"accept-encoding": "gzip"})
    zipped = client.send(raw, stream=True)
    body = b"".join(zipped.iter_raw())
    assert zipped.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == script.content
    assert client.get("/ui/app.css").headers["content-type"] == "text/css; charset=utf-8"
    head = client.head("/ui/js/main.js", headers={"accept-encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(script.content))
    assert client.get("/ui/missing.js").status_code == 404
    escape = client.get(httpx.URL(f"{daemon.url}/ui/%2e%2e/api/app.py"))
    assert escape.status_code == 404
    assert client.get(httpx.URL(f"{daemon.url}/ui/..%2fapi%2fapp.py")).status_code == 404


def test_session_answer(daemon: Daemon):
    client, csrf = signed_in(daemon)
    session = client.get("/ui/session").json()
    assert session["csrf"] == csrf and len(csrf) == 64
    assert session["api"] == daemon.url
    assert session["gateway"] == {"enabled": False, "url": None}
    assert session["expires_at"].endswith("Z")


def test_cookie_mutations_need_the_csrf_header_and_the_own_origin(daemon: Daemon):
    client, csrf = signed_in(daemon)
    before = generation(daemon)
    engines = engine_ids(daemon)

    def put(headers: dict[str, str]) -> httpx.Response:
        return client.put("/v1/engines/csrf", json=SPEC, headers=headers)

    refused: list[dict[str, Any]] = [
        {},
        {"X-Sagellm-CSRF": "0" * 64},
        {"X-Sagellm-CSRF": csrf, "Origin": "http://evil.example"},
        {"X-Sagellm-CSRF": csrf, "Origin": f"http://localhost:{daemon.port}"},
        {"X-Sagellm-CSRF": csrf, "Sec-Fetch-Site": "same-site"},
        {"X-Sagellm-CSRF": csrf, "Sec-Fetch-Site": "cross-site"},
    ]
    for headers in refused:
        answer = put(headers)
        assert answer.status_code == 403, (headers, answer.text)
        assert answer.json()["error"]["code"] == "csrf_refused"
        assert answer.json()["error"]["message"]
    assert generation(daemon) == before
    assert engine_ids(daemon) == engines
    accepted = put({"X-Sagellm-CSRF": csrf, "Origin": daemon.url, "Sec-Fetch-Site": "same-origin"})
    assert accepted.status_code == 201, accepted.text
    assert generation(daemon) == before + 1
    # A read needs no CSRF proof; a fetch-less mutation (no Origin) with the header goes too.
    restart = client.post("/v1/engines/csrf/restart", headers={"X-Sagellm-CSRF": csrf})
    assert restart.status_code == 200, restart.text


def test_no_session_no_token_is_401_and_the_bearer_token_works_as_before(daemon: Daemon):
    client = browser(daemon)
    assert client.put("/v1/engines/bearer", json=SPEC).status_code == 401
    assert (
        client.put("/v1/engines/bearer", json=SPEC, headers={"X-Sagellm-CSRF": "x"}).status_code
        == 401
    )
    assert daemon.put("/v1/engines/bearer", SPEC).status_code == 201
    assert client.get("/v1/status").status_code == 200  # loopback reads as before
    # A wrong bearer token is refused even next to a valid session cookie.
    signed, csrf = signed_in(daemon)
    wrong = signed.delete(
        "/v1/engines/bearer", headers={"Authorization": "Bearer nope", "X-Sagellm-CSRF": csrf}
    )
    assert wrong.status_code == 401


def test_a_tampered_cookie_is_no_session(daemon: Daemon):
    client, csrf = signed_in(daemon)
    value = cookie_of(client, daemon)
    sid, expiry, mac = value.split(".")
    for forged in (f"{sid}.{int(expiry) + 3600}.{mac}", f"{sid}x.{expiry}.{mac}", "junk"):
        other = browser(daemon, forged)
        answer = other.put("/v1/engines/solo", json=SPEC, headers={"X-Sagellm-CSRF": csrf})
        assert answer.status_code == 401, forged
        assert other.get("/ui/session").status_code == 401
        assert_signin_page(other.get("/ui/"))


def test_the_signin_form(daemon: Daemon):
    client = browser(daemon)
    wrong = client.post("/ui/signin", data={"token": "nope", "next": "/ui/#/presets"})
    page = assert_signin_page(wrong)
    assert 'id="sign-in-error"' in page and "wrong token" in page
    assert 'value="/ui/#/presets"' in page
    foreign = client.post(
        "/ui/signin", data={"token": daemon.token}, headers={"Origin": "http://evil.example"}
    )
    assert_signin_page(foreign, 403)
    assert "set-cookie" not in foreign.headers
    framed = client.post(
        "/ui/signin",
        data={"token": daemon.token},
        headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    )
    assert_signin_page(framed, 403)
    # What Chromium sends with the form itself under Referrer-Policy: no-referrer.
    own_form = browser(daemon).post(
        "/ui/signin",
        data={"token": daemon.token},
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert own_form.status_code == 303
    elsewhere = client.post("/ui/signin", data={"token": daemon.token, "next": "https://x.y/"})
    assert (elsewhere.status_code, elsewhere.headers["location"]) == (303, "/ui/")
    right = browser(daemon).post(
        "/ui/signin",
        data={"token": daemon.token, "next": "/ui/index.html"},
        headers={"Origin": daemon.url},
    )
    assert (right.status_code, right.headers["location"]) == (303, "/ui/index.html")
    assert "HttpOnly" in right.headers["set-cookie"]


def test_signout_clears_the_cookie_and_revokes_the_session(daemon: Daemon):
    client, csrf = signed_in(daemon)
    value = cookie_of(client, daemon)
    out = client.post("/ui/signout", headers={"Origin": daemon.url})
    assert (out.status_code, out.headers["location"]) == (303, "/ui/")
    assert "Max-Age=0" in out.headers["set-cookie"]
    replay = browser(daemon, value)
    assert replay.get("/ui/session").status_code == 401
    answer = replay.put("/v1/engines/solo", json=SPEC, headers={"X-Sagellm-CSRF": csrf})
    assert answer.status_code == 401


def test_a_signed_out_session_stays_refused_after_a_daemon_restart(make_daemon):
    daemon = make_daemon()
    client, _ = signed_in(daemon)
    value = cookie_of(client, daemon)
    kept, _ = signed_in(daemon)
    assert client.post("/ui/signout").status_code == 303
    daemon.stop()
    daemon.start()
    assert browser(daemon, value).get("/ui/session").status_code == 401
    assert kept.get("/ui/session").status_code == 200  # other sessions go on
    assert (daemon.home / "ui-signed-out.json").stat().st_mode & 0o077 == 0


def test_a_session_survives_a_restart_and_ends_with_a_new_token(make_daemon):
    daemon = make_daemon()
    client, csrf = signed_in(daemon)
    daemon.stop()
    daemon.start()
    assert client.get("/ui/session").json()["csrf"] == csrf
    assert client.get("/ui/").status_code == 200
    (daemon.home / "token").write_text("a-rotated-token-for-the-test\n")
    assert client.get("/ui/session").status_code == 401
    assert_signin_page(client.get("/ui/"))
    answer = client.put("/v1/engines/solo", json=SPEC, headers={"X-Sagellm-CSRF": csrf})
    assert answer.status_code == 401


def test_a_session_reads_env_values_like_the_token(daemon: Daemon):
    daemon.put("/v1/engines/secret", {**SPEC, "env": {"HF_TOKEN": "secret-value"}})
    anonymous = daemon.get("/v1/engines/secret").json()["spec"]["env"]["HF_TOKEN"]
    assert anonymous != "secret-value"
    client, _ = signed_in(daemon)
    assert client.get("/v1/engines/secret").json()["spec"]["env"]["HF_TOKEN"] == "secret-value"
