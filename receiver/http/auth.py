"""Who sent a request: the token registry and what each kind of token may do.

- the webhook token: `POST /v1/alertmanager` only;
- the API token: the operators' token, everything else under `/v1`;
- named operator tokens: like the API token, and the name is the audit actor of what
  they do, whatever the body's `actor` says;
- the gateway token: breaker reads and outcomes only (403 elsewhere).
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from aiohttp import web

from receiver.settings import Settings


class Role(StrEnum):
    WEBHOOK = "webhook"
    API = "api"
    OPERATOR = "operator"
    GATEWAY = "gateway"
    # RECEIVER_ALLOW_UNAUTHENTICATED=true and no token for this part of the API.
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    # An operator's name (RECEIVER_OPERATOR_TOKENS_FILE): the actor of their actions.
    name: str | None = None


PRINCIPAL: Final = web.RequestKey("principal", Principal)

# (method, canonical route) a gateway token may call. HEAD goes with GET.
GATEWAY_ROUTES: Final = frozenset(
    {
        ("GET", "/v1/tenants/{tenant_id}/breaker"),
        ("GET", "/v1/breakers"),
        ("POST", "/v1/tenants/{tenant_id}/outcomes"),
    }
)


def presented_token(header: str) -> str | None:
    """The token of an `Authorization` header (Bearer, or Basic whose password is the
    token, as Alertmanager's http_config can send), or None when there is none or it is
    malformed. Never raises: a header with non-ASCII bytes or bad base64 is no token."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    token: str | None = None
    scheme = scheme.lower()
    if scheme == "bearer":
        token = value
    elif scheme == "basic":
        try:
            # ValueError covers non-ASCII input, bad base64 (binascii.Error) and a
            # password that is not UTF-8 (UnicodeDecodeError).
            token = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except ValueError:
            return None
    # Configured tokens are printable ASCII (settings.check_tokens): anything else, e.g. a
    # header byte >= 0x80 that aiohttp hands over as a surrogate escape, cannot match.
    if not token or not token.isascii():
        return None
    return token


# Distinct valid headers remembered per registry (a Basic header can name any user).
MAX_KNOWN_HEADERS = 64


@dataclass(frozen=True)
class TokenRegistry:
    webhook: bytes | None
    api: bytes | None
    gateway: bytes | None
    operators: tuple[tuple[str, bytes], ...]
    # The configured tokens by hash(), each with the principal to answer, made once.
    _by_hash: dict[int, tuple[tuple[bytes, Principal], ...]] = field(
        init=False, repr=False, compare=False
    )
    # Authorization headers already identified, each with its principal: a gateway sends
    # the same header on every read. Only valid ones, so a guess never finds an entry.
    _known_headers: dict[str, Principal] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        candidates: list[tuple[Principal, bytes | None]] = [
            (Principal(Role.WEBHOOK), self.webhook),
            (Principal(Role.API), self.api),
            (Principal(Role.GATEWAY), self.gateway),
            *((Principal(Role.OPERATOR, name), token) for name, token in self.operators),
        ]
        by_hash: dict[int, tuple[tuple[bytes, Principal], ...]] = {}
        for principal, token in candidates:
            if token is not None:
                by_hash[hash(token)] = (*by_hash.get(hash(token), ()), (token, principal))
        object.__setattr__(self, "_by_hash", by_hash)
        object.__setattr__(self, "_known_headers", {})

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenRegistry:
        def raw(secret: object) -> bytes | None:
            if secret is None:
                return None
            return str(secret.get_secret_value()).encode()  # type: ignore[attr-defined]

        return cls(
            webhook=raw(settings.webhook_token),
            api=raw(settings.api_token),
            gateway=raw(settings.gateway_token),
            operators=tuple(
                (name, secret.get_secret_value().encode())
                for name, secret in sorted(settings.operator_tokens.items())
            ),
        )

    @property
    def webhook_open(self) -> bool:
        return self.webhook is None

    @property
    def api_open(self) -> bool:
        """No operator credential at all: only with RECEIVER_ALLOW_UNAUTHENTICATED=true
        (settings.check_startable refuses it otherwise)."""
        return self.api is None and not self.operators

    def from_header(self, header: str) -> tuple[Principal | None, bool]:
        """The principal of an `Authorization` header (None: no valid token), and whether
        the header presented a token at all."""
        known = self._known_headers.get(header)
        if known is not None:
            return known, True
        presented = presented_token(header)
        principal = self.identify(presented)
        if principal is not None and len(self._known_headers) < MAX_KNOWN_HEADERS:
            self._known_headers[header] = principal
        return principal, presented is not None

    def identify(self, presented: str | None) -> Principal | None:
        """The principal whose token this is. The dict lookup by hash() (keyed per process)
        only picks the candidates, telling nothing about a token; each is then compared in
        constant time."""
        if presented is None:
            return None
        given = presented.encode()
        # One comparison per request instead of one per configured token (the gateways'
        # reads), and no cryptographic digest: hash() is enough to pick the candidate.
        found: Principal | None = None
        for token, principal in self._by_hash.get(hash(given), ()):
            if hmac.compare_digest(given, token):
                found = principal
        return found


def gateway_may(request: web.Request) -> bool:
    method = "GET" if request.method == "HEAD" else request.method
    resource = request.match_info.route.resource
    return resource is not None and (method, resource.canonical) in GATEWAY_ROUTES


def actor(request: web.Request, stated: str) -> str:
    """The audit actor of an operator action: the authenticated operator's name when the
    request carries a named operator token, else what the body states."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is not None and principal.name is not None:
        return principal.name
    return stated
