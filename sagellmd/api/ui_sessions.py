"""Dashboard sign-in, pure: one-time codes, session cookies and their CSRF tokens.

A session cookie is `<sid>.<expiry-unix>.<mac>` with mac = HMAC-SHA256(token, sid|expiry):
the daemon keeps no session table, so a session survives a daemon restart, and a new token
(written into the token file) ends every session at once. Signing out revokes the session id
in memory (the browser also drops the cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CODE_LIFETIME_S = 120.0
SESSION_LIFETIME_S = 7 * 24 * 3600.0
# More codes than anyone asks for in two minutes; a flood cannot grow the daemon's memory.
MAX_PENDING_CODES = 1000
CSRF_HEADER = "x-sagellm-csrf"

_SID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_EXPIRY = re.compile(r"[0-9]{1,12}")
_MAC = re.compile(r"[0-9a-f]{64}")

Clock = Callable[[], float]


def cookie_name(api_port: int) -> str:
    """Cookies ignore ports: two daemons on one host must not overwrite each other's."""
    return f"sagellm_session_{api_port}"


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def csrf_for(token: str, sid: str) -> str:
    """The CSRF proof of a session: only a page that read /ui/session knows it."""
    return _mac(token, f"csrf|{sid}")


@dataclass(frozen=True)
class Session:
    sid: str
    expires_at: float

    def cookie_value(self, token: str) -> str:
        expiry = int(self.expires_at)
        return f"{self.sid}.{expiry}.{_mac(token, f'{self.sid}|{expiry}')}"


def new_session(now: float, lifetime_s: float = SESSION_LIFETIME_S) -> Session:
    return Session(secrets.token_urlsafe(24), float(int(now + lifetime_s)))


def parse_cookie(value: str, token: str, now: float) -> Session | None:
    """The session a cookie value proves, or None (malformed, forged, signed with an older
    token, or expired)."""
    parts = value.split(".")
    if len(parts) != 3:
        return None
    sid, expiry, mac = parts
    if not (_SID.fullmatch(sid) and _EXPIRY.fullmatch(expiry) and _MAC.fullmatch(mac)):
        return None
    if not hmac.compare_digest(mac, _mac(token, f"{sid}|{expiry}")):
        return None
    if int(expiry) <= now:
        return None
    return Session(sid, float(expiry))


@dataclass
class OneTimeCodes:
    """Codes `sagellm ui` puts in its URL: each signs in once, within `lifetime_s`."""

    lifetime_s: float = CODE_LIFETIME_S
    clock: Clock = time.time
    _pending: dict[str, float] = field(default_factory=dict)

    def issue(self) -> tuple[str, float]:
        """A new code and the time it expires."""
        now = self.clock()
        self._forget_expired(now)
        if len(self._pending) >= MAX_PENDING_CODES:
            oldest = min(self._pending, key=self._pending.__getitem__)
            del self._pending[oldest]
        code = secrets.token_urlsafe(24)
        expires_at = now + self.lifetime_s
        self._pending[code] = expires_at
        return code, expires_at

    def redeem(self, code: str) -> bool:
        """True once for a code issued and not expired; it is gone afterwards either way."""
        expires_at = self._pending.pop(code, None)
        return expires_at is not None and self.clock() < expires_at

    def _forget_expired(self, now: float) -> None:
        for code in [code for code, expiry in self._pending.items() if expiry <= now]:
            del self._pending[code]


@dataclass
class UiSessions:
    """The daemon's sign-in state: pending codes and the session ids signed out."""

    clock: Clock = time.time
    codes: OneTimeCodes = field(default_factory=OneTimeCodes)
    # sid -> the cookie's expiry: past that the cookie is refused anyway, so it can go.
    _revoked: dict[str, float] = field(default_factory=dict)
    # Called with every sign-out's new list, so it outlives a daemon restart.
    persist: Callable[[dict[str, float]], None] | None = None

    def start(self) -> Session:
        return new_session(self.clock())

    def check(self, cookie: str | None, token: str) -> Session | None:
        if not cookie:
            return None
        session = parse_cookie(cookie, token, self.clock())
        if session is None or session.sid in self._revoked:
            return None
        return session

    def revoke(self, session: Session) -> None:
        now = self.clock()
        for sid in [sid for sid, expiry in self._revoked.items() if expiry <= now]:
            del self._revoked[sid]
        self._revoked[session.sid] = session.expires_at
        if self.persist is not None:
            self.persist(dict(self._revoked))


def same_origin_problem(origin: str | None, own_origin: str, fetch_site: str | None) -> str | None:
    """Why a cookie-carrying mutation may come from another site, or None. Browsers send
    `Origin` on every cross-origin POST and `Sec-Fetch-Site` on every request they make.

    Under `Referrer-Policy: no-referrer` (a proxy may add it) Chromium sends `Origin: null`
    with a page's own POSTs; that counts as same-origin only when `Sec-Fetch-Site` says so.
    """
    if origin == "null" and fetch_site == "same-origin":
        return None
    if origin is not None and origin != own_origin:
        return f"Origin {origin!r:.100} is not this daemon's origin {own_origin!r}"
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site!r:.40}; only same-origin requests may change state"
    return None
