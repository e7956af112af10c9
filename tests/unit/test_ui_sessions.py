"""Dashboard sign-in, the pure parts: one-time codes, session cookies, CSRF and origin checks,
and the static file lookup that must never leave sagellmd/ui/."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagellmd.api.ui_pages import safe_next
from sagellmd.api.ui_sessions import (
    MAX_PENDING_CODES,
    OneTimeCodes,
    Session,
    UiSessions,
    cookie_name,
    csrf_for,
    new_session,
    parse_cookie,
    same_origin_problem,
)
from sagellmd.api.ui_signed_out import load, save
from sagellmd.api.ui_static import StaticFiles, accepts_gzip, is_html_path, resolve


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_code_redeems_once():
    codes = OneTimeCodes(clock=Clock())
    code, _ = codes.issue()
    assert codes.redeem(code) is True
    assert codes.redeem(code) is False
    assert codes.redeem("never-issued") is False


def test_a_code_expires_after_its_lifetime():
    clock = Clock()
    codes = OneTimeCodes(lifetime_s=120, clock=clock)
    early, expires_at = codes.issue()
    late, _ = codes.issue()
    assert expires_at == clock.now + 120
    clock.now += 119.9
    assert codes.redeem(early) is True
    clock.now += 0.1
    assert codes.redeem(late) is False


def test_pending_codes_are_bounded():
    clock = Clock()
    codes = OneTimeCodes(clock=clock)
    first, _ = codes.issue()
    for _ in range(MAX_PENDING_CODES):
        clock.now += 0.001
        codes.issue()
    assert codes.redeem(first) is False  # the oldest made room
    assert len(codes._pending) == MAX_PENDING_CODES


def test_a_cookie_round_trips_and_proves_its_session():
    session = new_session(1000.0, lifetime_s=60)
    value = session.cookie_value("tok")
    assert parse_cookie(value, "tok", 1000.0) == Session(session.sid, 1060.0)
    assert "." not in session.sid and len(value.split(".")) == 3


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"),  # another mac
        lambda v: v.replace(v.split(".")[1], str(int(v.split(".")[1]) + 999)),  # longer life
        lambda v: "x" + v,  # another sid
        lambda v: v + ".extra",
        lambda v: "",
    ],
)
def test_a_tampered_cookie_proves_nothing(mutate):
    value = new_session(1000.0).cookie_value("tok")
    assert parse_cookie(mutate(value), "tok", 1000.0) is None


def test_a_new_token_or_the_expiry_ends_a_session():
    value = new_session(1000.0, lifetime_s=60).cookie_value("tok")
    assert parse_cookie(value, "rotated", 1000.0) is None
    assert parse_cookie(value, "tok", 1059.0) is not None
    assert parse_cookie(value, "tok", 1060.0) is None


def test_revoked_sessions_are_refused_and_forgotten_after_expiry():
    clock = Clock(1000.0)
    sessions = UiSessions(clock=clock)
    session = sessions.start()
    value = session.cookie_value("tok")
    assert sessions.check(value, "tok") == session
    sessions.revoke(session)
    assert sessions.check(value, "tok") is None
    assert sessions.check(None, "tok") is None
    clock.now = session.expires_at + 1
    sessions.revoke(sessions.start())
    assert session.sid not in sessions._revoked


def test_csrf_depends_on_session_and_token():
    assert csrf_for("tok", "a") != csrf_for("tok", "b")
    assert csrf_for("tok", "a") != csrf_for("other", "a")
    assert csrf_for("tok", "a") == csrf_for("tok", "a")


def test_cookie_names_carry_the_port():
    assert cookie_name(8765) == "sagellm_session_8765"


@pytest.mark.parametrize(
    ("origin", "site", "refused"),
    [
        (None, None, False),
        ("http://127.0.0.1:8765", "same-origin", False),
        (None, "none", False),
        ("http://localhost:8765", None, True),
        ("http://127.0.0.1:8766", None, True),
        ("null", None, True),
        ("null", "same-origin", False),  # a form's POST under Referrer-Policy: no-referrer
        ("null", "cross-site", True),
        ("null", "none", True),
        (None, "same-site", True),
        (None, "cross-site", True),
    ],
)
def test_same_origin_problem(origin, site, refused):
    problem = same_origin_problem(origin, "http://127.0.0.1:8765", site)
    assert (problem is not None) is refused


def test_files_resolve_only_inside_the_root(tmp_path: Path):
    root = tmp_path / "ui"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<p>hi</p>")
    (root / "js" / "main.js").write_text("export {};")
    (tmp_path / "secret.txt").write_text("no")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert resolve(root, "") == (root / "index.html").resolve()
    assert resolve(root, "js/main.js") == (root / "js" / "main.js").resolve()
    for bad in ("../secret.txt", "js/../../secret.txt", "/etc/passwd", "link.txt", "js", "a\x00b"):
        assert resolve(root, bad) is None, bad
    assert resolve(root, "js/") is None  # a folder without index.html
    assert resolve(root, "missing.js") is None


def test_static_files_have_types_etags_and_gzip(tmp_path: Path):
    (tmp_path / "big.js").write_text("let x = 1;\n" * 200)
    (tmp_path / "tiny.css").write_text("a{}")
    files = StaticFiles(tmp_path)
    big = files.get("big.js")
    assert big is not None and big.media_type == "text/javascript; charset=utf-8"
    assert big.gzipped is not None and len(big.gzipped) < len(big.body)
    tiny = files.get("tiny.css")
    assert tiny is not None and tiny.gzipped is None and tiny.media_type.startswith("text/css")
    (tmp_path / "big.js").write_text("let y = 2;\n" * 200)
    changed = files.get("big.js")
    assert changed is not None and changed.etag != big.etag


def test_accepts_gzip():
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, gzip;q=0.8")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("br")
    assert not accepts_gzip("")


def test_html_paths_and_next():
    assert is_html_path("") and is_html_path("x/") and is_html_path("a.html")
    assert not is_html_path("app.css")
    assert safe_next("/ui/index.html?x=1") == "/ui/index.html?x=1"
    for bad in (None, "", "https://evil.example/", "//evil.example/ui/", "/v1/status", "/ui/\n"):
        assert safe_next(bad) == "/ui/"


def test_signed_out_ids_are_saved_and_loaded_until_they_expire(tmp_path: Path):
    path = tmp_path / "ui-signed-out.json"
    saved: list[dict[str, float]] = []
    sessions = UiSessions(clock=Clock(1000.0), persist=saved.append)
    session = sessions.start()
    sessions.revoke(session)
    assert saved == [{session.sid: session.expires_at}]
    save(path, {"old": 1500.0, "new": 3000.0})
    assert load(path, 2000.0) == {"new": 3000.0}
    assert load(tmp_path / "missing.json", 0) == {}
    path.write_text("{not json")
    assert load(path, 0) == {}
    path.write_text('["a list"]')
    assert load(path, 0) == {}
