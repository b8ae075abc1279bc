"""Who gets which e-mail about an incident, and what became of each recipient.

Pure. An incident's e-mail goes to *audiences*, each its own message and its own outbox
row: the operators (RECEIVER_EMAIL_TO) are told everything; each affected tenant's admins
(`admin_email`, one or more addresses) get a message about their own tenant only, so no
header, envelope or text shows one tenant another tenant's addresses or name.

Each row keeps the state of each of its recipients (accepted, refused for good, or still
pending), so a retry goes only to the recipients that have not accepted yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from receiver.domain.notification import IncidentMessage, TenantSummary

OPERATORS = "operators"
TENANT_PREFIX = "tenant:"

ACCEPTED = "accepted"
PENDING = "pending"
REFUSED = "refused"
STATES = (ACCEPTED, PENDING, REFUSED)

#: How many addresses an error message or audit row names before '... and N more'.
NAMED_MAX = 20


def parse_addresses(value: str | Sequence[str] | None) -> list[str]:
    """Bare addresses from 'a@x, Ops Team <b@y>' or a list of such strings.

    Quoted display names may contain commas ('"Doe, Jane" <j@x>'), so this parses
    addresses properly instead of splitting on commas. Entries that cannot be an address
    (no '@', whitespace or control characters, which would also allow header injection)
    are dropped; duplicates too (case-insensitively, first spelling kept).
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    if any(_has_control(item) for item in items):
        # getaddresses would split 'a@x\r\nBcc: b@y' into two harmless-looking addresses.
        items = [item for item in items if not _has_control(item)]
    seen: set[str] = set()
    out: list[str] = []
    for _, raw in getaddresses(items):
        address = raw.strip()
        if _plausible(address) and address.casefold() not in seen:
            seen.add(address.casefold())
            out.append(address)
    return out


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _plausible(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return False
    return not any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in address)


@dataclass(frozen=True)
class Audience:
    """One e-mail: its recipients and the message they are told."""

    key: str  # "operators" or "tenant:<tenant id>"
    recipients: tuple[str, ...]
    message: IncidentMessage


def tenant_key(tenant_id: str) -> str:
    return TENANT_PREFIX + tenant_id


def tenant_view(msg: IncidentMessage, tenant: TenantSummary) -> IncidentMessage:
    """What a tenant's admins are told: this tenant only. The incident's title names
    other tenants ('3 tenants failing (a, b, c)'), the note is the operators' free text,
    and the runbooks and incident page are the operators' own: none of them goes out."""
    who = tenant.name or tenant.tenant_id
    return dataclasses.replace(
        msg,
        title=f"Service disruption affecting {who}",
        tenants=(tenant,),
        note=None,
        runbook_urls=(),
        incident_url=None,
    )


def email_audiences(msg: IncidentMessage, *, operators: Sequence[str]) -> list[Audience]:
    """The operators' message (when any are configured), then one per tenant with admins.

    An admin address that is also an operator's is left to the operators' message (which
    already tells it everything). Two tenants sharing an admin each send it their own."""
    ops = tuple(parse_addresses(list(operators)))
    audiences: list[Audience] = []
    if ops:
        audiences.append(Audience(OPERATORS, ops, msg))
    told = {a.casefold() for a in ops}
    keys: set[str] = set()
    for tenant in msg.tenants:
        key = tenant_key(tenant.tenant_id)
        admins = tuple(a for a in parse_addresses(tenant.admin_email) if a.casefold() not in told)
        if admins and key not in keys:
            keys.add(key)
            audiences.append(Audience(key, admins, tenant_view(msg, tenant)))
    return audiences


@dataclass(frozen=True)
class Recipient:
    """One address of an e-mail row and what the SMTP server last said about it."""

    address: str
    state: str = PENDING
    reply: str | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown recipient state {self.state!r}")

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "state": self.state, "reply": self.reply}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Recipient:
        address, state, reply = d.get("address"), d.get("state", PENDING), d.get("reply")
        if not isinstance(address, str) or not isinstance(state, str):
            raise ValueError("a recipient needs a string 'address' and 'state'")
        return cls(address, state, reply if isinstance(reply, str) else None)


def pending_recipients(address: Iterable[str]) -> tuple[Recipient, ...]:
    return tuple(Recipient(a) for a in address)


def merge(current: Sequence[Recipient], outcomes: Mapping[str, Recipient]) -> tuple[Recipient, ...]:
    """`current` with the outcomes of an attempt (by address). An accepted or refused
    recipient never goes back to pending: the server has answered for good."""
    merged = []
    for r in current:
        new = outcomes.get(r.address)
        merged.append(r if new is None or r.state != PENDING else new)
    return tuple(merged)


def with_state(recipients: Iterable[Recipient], state: str) -> list[Recipient]:
    return [r for r in recipients if r.state == state]


def all_accepted(recipients: Sequence[Recipient]) -> bool:
    return bool(recipients) and all(r.state == ACCEPTED for r in recipients)


def describe_unaccepted(recipients: Sequence[Recipient]) -> str:
    """'refused: a@x (550 5.1.1 no such user); not accepted yet: b@y (451 greylisted)'."""
    parts = []
    for label, state in (("refused", REFUSED), ("not accepted yet", PENDING)):
        named = with_state(recipients, state)
        if named:
            parts.append(f"{label}: {_named(named)}")
    return "; ".join(parts) or "every recipient accepted"


def _named(recipients: Sequence[Recipient]) -> str:
    shown = [f"{r.address} ({r.reply})" if r.reply else r.address for r in recipients[:NAMED_MAX]]
    more = len(recipients) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
