"""Who is at the console: the operator token (a bearer header, or the login form that
turns it into a signed session cookie), the operator's name as the audit actor, and the
CSRF token every form carries.

- `operator_name(request)` is the one place the console's handlers get the actor from.
- `ConsoleAuth.identify(token)` is the one place a token becomes an operator, through the
  same token registry as /v1 (receiver.http.auth): a named operator token
  (RECEIVER_OPERATOR_TOKENS_FILE) is that operator, whatever the login form says; the
  shared API token is "operator" or the name typed at login. Webhook and gateway tokens
  never open the console.
- The cookie holds {name, csrf, token fingerprint}, signed (itsdangerous) and dated: it
  expires after RECEIVER_UI_SESSION_SECONDS, and dies with the token it was made from
  (its fingerprint must be one of a valid token).
- The signing key: RECEIVER_UI_SESSION_KEY_FILE, else derived from the operator
  credentials (the API token and the named operator tokens: every replica has them, so a
  session made on one is good on all, and rotating a token ends every session), else,
  without any token, random per start.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from aiohttp import web
from itsdangerous import BadSignature, URLSafeTimedSerializer

from receiver.http.auth import Role, TokenRegistry
from receiver.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "receiver_console"
LOGIN_COOKIE = "receiver_console_login"
COOKIE_PATH = "/ui"
DEFAULT_OPERATOR = "operator"
_OPERATOR = "console_operator"


@dataclass(frozen=True)
class Operator:
    """The signed-in operator. `csrf` is None when the request carried the token itself
    (a bearer header is no ambient credential: no cross-site form can send it)."""

    name: str
    csrf: str | None


OPERATOR = web.RequestKey(_OPERATOR, Operator)


def operator_name(request: web.Request) -> str:
    """The audit actor of the console's writes."""
    return request[OPERATOR].name


def csrf_token(request: web.Request) -> str:
    return request[OPERATOR].csrf or ""


def _fingerprint(key: bytes, token: str) -> str:
    return hmac.new(key, b"token:" + token.encode(), hashlib.sha256).hexdigest()[:32]


class ConsoleAuth:
    def __init__(self, *, key: bytes, tokens: TokenRegistry, max_age: int) -> None:
        self._key = key
        self._tokens = tokens
        self.max_age = max_age
        self._sessions = URLSafeTimedSerializer(key, salt="receiver-console-session")
        self._logins = URLSafeTimedSerializer(key, salt="receiver-console-login")
        # Sessions made from a token that is no longer valid are refused.
        self._valid = {_fingerprint(key, t.decode()) for t in self._operator_credentials()}
        if tokens.api_open:
            self._valid.add(_fingerprint(key, ""))

    def _operator_credentials(self) -> list[bytes]:
        found = [self._tokens.api] if self._tokens.api is not None else []
        return found + [token for _, token in self._tokens.operators]

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleAuth:
        tokens = TokenRegistry.from_settings(settings)
        key = settings.ui_session_key
        credentials = b"\0".join(
            ([tokens.api] if tokens.api is not None else []) + [t for _, t in tokens.operators]
        )
        if key is None and credentials:
            key = hmac.new(credentials, b"receiver console session key", hashlib.sha256).digest()
        if key is None:
            log.warning(
                "console sessions are signed with a key made at start (no operator token and "
                "no RECEIVER_UI_SESSION_KEY_FILE): they end when this process does"
            )
            key = secrets.token_bytes(32)
        return cls(key=key, tokens=tokens, max_age=int(settings.ui_session_seconds))

    def identify(self, token: str, *, name: str = "") -> str | None:
        """The operator a token belongs to (None: not an operator's token). A named operator
        token is that operator; the shared API token is the name typed at login, else
        "operator". Without operator credentials (RECEIVER_ALLOW_UNAUTHENTICATED) any token
        is accepted, as on /v1."""
        if self._tokens.api_open:
            return name.strip()[:100] or DEFAULT_OPERATOR
        principal = self._tokens.identify(token)
        if principal is None:
            return None
        if principal.role is Role.OPERATOR and principal.name is not None:
            return principal.name
        if principal.role is Role.API:
            return name.strip()[:100] or DEFAULT_OPERATOR
        return None

    # --- the session cookie -----------------------------------------------------------

    def new_session(self, name: str, token: str) -> str:
        csrf = secrets.token_urlsafe(24)
        return self._sessions.dumps(
            {"n": name, "c": csrf, "f": _fingerprint(self._key, self._canonical(token))}
        )

    def _canonical(self, token: str) -> str:
        return "" if self._tokens.api_open else token

    def session(self, cookie: str | None) -> Operator | None:
        if not cookie:
            return None
        try:
            data = self._sessions.loads(cookie, max_age=self.max_age)
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(data, dict) or data.get("f") not in self._valid:
            return None
        return Operator(name=str(data["n"]), csrf=str(data["c"]))

    # --- the login form's own CSRF token (double submit: a cookie and a field) -----------

    def login_challenge(self) -> tuple[str, str]:
        """(cookie value, form field value)."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._logins.dumps(nonce)

    def login_answer_ok(self, cookie: str | None, field: str) -> bool:
        try:
            nonce = self._logins.loads(field, max_age=3600)
        except BadSignature:
            return False
        return bool(cookie) and hmac.compare_digest(str(nonce), str(cookie))


def is_secure(request: web.Request) -> bool:
    """HTTPS here or at the proxy in front (X-Forwarded-Proto only makes cookies stricter)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int
) -> None:
    # Lax, not Strict: a link from a notification (RECEIVER_PUBLIC_URL) must open the
    # incident page in the session; GETs change nothing and every POST needs its CSRF token.
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Lax",
        secure=is_secure(request),
    )
