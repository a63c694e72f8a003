"""The ``--token`` guard: scripts send ``Authorization: Bearer <token>``; browsers, which cannot add that
header to page loads or EventSource streams, sign in once at /login and send a session cookie instead.

The cookie holds an HMAC of the token, not the token (the token may open other doors too); it is
HttpOnly and SameSite=Strict. SameSite does not tell ports apart, so another app on the same host could
still send it: a change (POST, PUT, PATCH, DELETE) made with the cookie must also come from this
server's own origin (the ``Origin`` header, else ``Referer``), OWASP's check for cookie sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

SESSION_COOKIE = "smokeseg_session"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
# Signing in and out needs no credentials; every other route does.
OPEN_PATHS = frozenset({LOGIN_PATH, LOGOUT_PATH})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_LANDING = "/experiments"

_bearer = HTTPBearer(auto_error=False, description="Bearer token, when the server runs with --token")


def server_token(request: Request) -> str | None:
    return request.app.state.service.settings.token


def session_value(token: str) -> str:
    """What the session cookie holds for ``token``: derived from it, so the cookie does not reveal it."""
    return hmac.new(token.encode(), b"smokeseg web session", hashlib.sha256).hexdigest()


def _matches(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def token_matches(request: Request, given: str) -> bool:
    token = server_token(request)
    return token is not None and _matches(given, token)


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
    """With --token, every call needs the bearer token or a signed-in browser's session cookie;
    compared in constant time."""
    token = server_token(request)
    if token is None or request.url.path in OPEN_PATHS:
        return
    if credentials is not None and _matches(credentials.credentials, token):
        return
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None and _matches(cookie, session_value(token)):
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
        f"in a browser, sign in at {LOGIN_PATH}.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def set_session(request: Request, response: Response) -> None:
    """Sign the browser in: the session cookie lasts until the browser closes."""
    token = server_token(request)
    assert token is not None
    response.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")


def local_target(target: str | None) -> str:
    """Where to go after signing in: a path of this server only (``//host`` or a full URL would send the
    browser elsewhere: an open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return DEFAULT_LANDING
    return target
