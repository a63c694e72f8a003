"""The ``--token`` guard: scripts send ``Authorization: Bearer <token>``; browsers, which cannot add that
header to page loads or EventSource streams, sign in once at /login and send a session cookie instead.

The cookie holds an HMAC of the token, not the token (the token may open other doors too); it is
HttpOnly and SameSite=Strict. SameSite does not tell ports apart, so another app on the same host could
still send it: a change (POST, PUT, PATCH, DELETE) made with the cookie must also come from this
server's own origin (the ``Origin`` header, else ``Referer``), OWASP's check for cookie sessions.
A cookie carries the time it was issued inside its HMAC and is refused after the server's session
lifetime, so a copied cookie does not open the server for good; signing out also ends it on the server
(``SignedOutSessions``, in the registry's database, so a restart does not forget it), so a copy taken
before does not outlive the sign-out. Each sign-in gets its own cookie (a random nonce under the HMAC),
so signing one browser out leaves another signed in. Wrong tokens (sign-in form or bearer header) are
counted per client address (``SignInThrottle``), so a short token cannot be guessed at network speed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError

from smokeseg.service.registry import Registry, signed_out_sessions

SESSION_COOKIE = "smokeseg_session"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
# Signing in and out needs no credentials; every other route does.
OPEN_PATHS = frozenset({LOGIN_PATH, LOGOUT_PATH})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_LANDING = "/experiments"
NONCE_BYTES = 8  # per sign-in, so two browsers signed in within one second get different cookies

_bearer = HTTPBearer(auto_error=False, description="Bearer token, when the server runs with --token")


def server_token(request: Request) -> str | None:
    return request.app.state.service.settings.token


def session_value(token: str, issued: int, nonce: str) -> str:
    """What the session cookie holds for ``token``, signed in at ``issued`` (Unix seconds) with ``nonce``
    (a new one per sign-in): the time, the nonce and an HMAC of both keyed by the token, so the cookie
    neither reveals the token nor can be made younger."""
    message = f"smokeseg web session {issued} {nonce}".encode()
    mac = hmac.new(token.encode(), message, hashlib.sha256).hexdigest()
    return f"{issued}.{nonce}.{mac}"


def new_session_value(token: str) -> str:
    return session_value(token, int(time.time()), secrets.token_hex(NONCE_BYTES))


def session_issued(cookie: str) -> int | None:
    """The issue time a session cookie claims (Unix seconds); None unless it is a short ASCII number
    (``int()`` would take "²" or parse 5000 digits). Not a proof: ``session_is_valid`` checks the HMAC."""
    text, _, _ = cookie.partition(".")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def session_is_valid(cookie: str, token: str, lifetime_s: float, now: float) -> bool:
    """Signed with ``token`` and issued within the last ``lifetime_s`` (not in the future beyond a
    minute's clock skew)."""
    issued = session_issued(cookie)
    parts = cookie.split(".")
    if issued is None or len(parts) != 3:
        return False
    return _matches(cookie, session_value(token, issued, parts[1])) and -60 <= now - issued <= lifetime_s


@dataclass
class SignInThrottle:
    """Wrong tokens per client address: after ``attempts`` of them within ``window_s`` the address is
    refused (429) until the oldest ages out, the right token included (else the refusal would not slow a
    guesser down). Thread-safe: FastAPI runs sync dependencies in a thread pool."""

    attempts: int
    window_s: float = 60.0
    max_clients: int = 10_000  # addresses remembered at most, so a flood cannot grow memory
    _failures: dict[str, deque[float]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try a token again; None when it may now."""
        with self._lock:
            failures = self._failures.get(client)
            if failures is None or len(failures) < self.attempts:
                return None
            wait = failures[0] + self.window_s - time.monotonic()
        return math.ceil(wait) if wait > 0 else None

    def record_failure(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            if client not in self._failures and len(self._failures) >= self.max_clients:
                self._forget_before(now - self.window_s)
            self._failures.setdefault(client, deque(maxlen=self.attempts)).append(now)

    def _forget_before(self, moment: float) -> None:
        """Drop addresses whose last failure is older than ``moment``; then the oldest, if still full."""
        for client in [client for client, times in self._failures.items() if times[-1] < moment]:
            del self._failures[client]
        while len(self._failures) >= self.max_clients:
            del self._failures[next(iter(self._failures))]


@dataclass
class SignedOutSessions:
    """Session cookies signed out before they expired: refused until their lifetime is over, then forgotten
    (an expired cookie is refused anyway), so the rows held are the sign-outs of one session lifetime.
    Kept in the registry's database as SHA-256 digests: a restart still refuses them. Only a valid cookie
    is recorded, and minting one needs the token."""

    registry: Registry

    def sign_out(self, cookie: str, expires: float, now: float) -> None:
        table = signed_out_sessions
        # IntegrityError: the same cookie signed out twice at once, and the first sign-out's row stands
        with suppress(IntegrityError), self.registry.transaction() as connection:
            connection.execute(table.delete().where(table.c.expires_at < _utc(now)))
            connection.execute(table.insert().values(id=_digest(cookie), expires_at=_utc(expires)))

    def __contains__(self, cookie: str) -> bool:
        return self.registry.get(signed_out_sessions, _digest(cookie)) is not None


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def _utc(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds, timezone.utc)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_not_throttled(request: Request) -> None:
    """429 while this client has used up its wrong tokens (``SignInThrottle``)."""
    wait = request.app.state.service.sign_in.retry_after(client_address(request))
    if wait is not None:
        raise HTTPException(
            status_code=429,
            detail=f"Too many wrong tokens from this address: try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )


def record_wrong_token(request: Request) -> None:
    request.app.state.service.sign_in.record_failure(client_address(request))


def _matches(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def token_matches(request: Request, given: str) -> bool:
    """Whether ``given`` is the server's token; a wrong one counts against the client (429 once it has
    used up its attempts, before the token is even compared)."""
    check_not_throttled(request)
    token = server_token(request)
    if token is not None and _matches(given, token):
        return True
    record_wrong_token(request)
    return False


def _session_lifetime_s(request: Request) -> float:
    return request.app.state.service.settings.session_hours * 3600


def _valid_session(request: Request, token: str) -> str | None:
    """The request's session cookie when it is signed with ``token``, unexpired and not signed out."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None or not session_is_valid(cookie, token, _session_lifetime_s(request), time.time()):
        return None
    return None if cookie in request.app.state.service.signed_out else cookie


def _same_origin(request: Request) -> bool:
    """Whether the request was sent by a page of this server (scheme and host:port as it was called)."""
    sender = request.headers.get("origin") or request.headers.get("referer")
    if not sender:
        return False
    parts = urlsplit(sender)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """With --token, every call needs the bearer token or a signed-in browser's unexpired session cookie
    that was not signed out; compared in constant time."""
    token = server_token(request)
    if token is None or request.url.path in OPEN_PATHS:
        return
    if credentials is not None and token_matches(request, credentials.credentials):
        return
    if _valid_session(request, token) is not None:
        if request.method in SAFE_METHODS or _same_origin(request):
            return
        raise HTTPException(
            status_code=403,
            detail="A change made with the session cookie must come from this server's own pages "
            "(its Origin header differs): scripts send 'Authorization: Bearer <token>' instead.",
        )
    raise HTTPException(
        status_code=401,
        detail="This server needs 'Authorization: Bearer <token>' (the token it was started with); "
        f"in a browser, sign in at {LOGIN_PATH} (again, once a session has expired).",
        headers={"WWW-Authenticate": "Bearer"},
    )


def set_session(request: Request, response: Response) -> None:
    """Sign the browser in: the session cookie lasts until the browser closes or the server's session
    lifetime (``--session-hours``) has passed, whichever comes first."""
    token = server_token(request)
    assert token is not None
    response.set_cookie(
        SESSION_COOKIE,
        new_session_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def end_session(request: Request, response: Response) -> None:
    """Sign the browser out: delete its cookie and refuse that cookie from now on, so a copy of it does not
    stay valid until ``--session-hours``."""
    token = server_token(request)
    cookie = None if token is None else _valid_session(request, token)
    issued = None if cookie is None else session_issued(cookie)
    if cookie is not None and issued is not None:  # a valid cookie always has its issue time
        request.app.state.service.signed_out.sign_out(
            cookie, issued + _session_lifetime_s(request), time.time()
        )
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")


def local_target(target: str | None) -> str:
    """Where to go after signing in: a path of this server only (``//host`` or a full URL would send the
    browser elsewhere: an open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return DEFAULT_LANDING
    return target
