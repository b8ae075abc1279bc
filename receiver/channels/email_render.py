"""The e-mail about an incident event: body, headers, and its form on the wire.

Every e-mail has a Message-ID of its own, `<INC-...-NNNN.<random>@<From's domain>>`, with
a random part chosen when the row was queued (so it never repeats across installations
or after a reset, and a retry keeps it); follow-ups carry `In-Reply-To` and `References`
naming the first e-mail of their (incident, audience), so clients thread them.

On the wire (RFC 5321, 5322, 2045, 2047, 6531, 6152):
- the body is 7bit when it is ASCII with lines within 998 octets; 8bit when the server
  offers 8BITMIME (and MAIL FROM then says BODY=8BITMIME); quoted-printable otherwise,
  with lines of at most 76 characters;
- a non-ASCII subject becomes RFC 2047 encoded words of at most 75 characters (the
  standard library's `email.header.Header`), or stays UTF-8 when the server offers
  SMTPUTF8 and a recipient needs it;
- no line exceeds 998 octets.
"""

from __future__ import annotations

import email.policy
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from receiver.domain.notification import (
    SOURCE,
    IncidentMessage,
    NotificationEvent,
    format_time,
    headline,
    severity_word,
    tenant_line,
    what_happened,
)

SUBJECT_MAX = 200
_WIDTH = 76
#: RFC 5322 §2.1.1: lines of at most 998 characters, CRLF excluded.
LINE_MAX = 998
#: RFC 2045 §6.7: quoted-printable lines of at most 76 characters.
QP_LINE_MAX = 76

#: Building the message: quoted-printable wraps at 76 columns.
_BUILD_POLICY = email.policy.SMTP.clone(max_line_length=QP_LINE_MAX)


def wire_policy(*, eight_bit: bool, utf8: bool) -> email.policy.EmailPolicy[EmailMessage]:
    """How the message is flattened for a server with or without 8BITMIME / SMTPUTF8.

    Headers fold at 78 columns; the subject is stored pre-encoded (see `_set_subject`)
    and `refold_source='none'` keeps Python's folder, which can drop the space between
    two encoded words, away from it."""
    return email.policy.SMTP.clone(
        max_line_length=78,
        refold_source="none",
        cte_type="8bit" if eight_bit or utf8 else "7bit",
        utf8=utf8,
    )


def domain_of(sender: str) -> str:
    address = parseaddr(sender)[1] or sender
    domain = address.rpartition("@")[2].strip().strip(">")
    return domain if domain and "." in domain else "blast-radius-receiver.invalid"


def message_id(incident_id: str, key: str, sender: str) -> str:
    """`<INC-20240501-0001.<key>@<domain>>`: globally unique through `key` (random)."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-._") else "_" for c in incident_id)
    safe_key = "".join(c for c in key if c.isascii() and c.isalnum()) or "0"
    domain = "".join(c for c in domain_of(sender) if c.isascii() and (c.isalnum() or c in "-."))
    return f"<{safe}.{safe_key}@{domain or 'blast-radius-receiver.invalid'}>"


def render_body(msg: IncidentMessage) -> str:
    """Plain text that reads well in any client, terminal ones included."""
    lines: list[str] = [*textwrap.wrap(what_happened(msg), _WIDTH), ""]

    rows: list[tuple[str, str]] = [("Incident", msg.incident_id)]
    rows.append(("Title", " ".join(msg.title.split()) or "(no title)"))
    priority = f"{msg.priority} ({severity_word(msg.priority)})"
    if msg.previous_priority is not None and msg.previous_priority != msg.priority:
        priority += f", escalated from {msg.previous_priority}"
    rows.append(("Priority", priority))
    rows.append(("Status", msg.status))
    rows.append(("Opened", format_time(msg.opened_at)))
    due_label = "Ack was due" if msg.event is NotificationEvent.SLA_BREACHED else "Ack due"
    rows.append((due_label, format_time(msg.ack_due_at)))
    if msg.actor:
        label = {
            NotificationEvent.ACKNOWLEDGED: "Acknowledged by",
            NotificationEvent.RESOLVED: "Resolved by",
        }.get(msg.event, "By")
        rows.append((label, msg.actor))
    width = max(len(k) for k, _ in rows) + 1
    lines += [f"  {(k + ':').ljust(width)} {v}" for k, v in rows]

    if msg.note:
        lines += ["", "Note:"]
        for para in msg.note.splitlines() or [""]:
            lines += textwrap.wrap(para, _WIDTH, initial_indent="  ", subsequent_indent="  ")
            if not para.strip():
                lines.append("")

    lines.append("")
    if msg.tenants:
        lines.append(f"Affected tenants ({len(msg.tenants)}):")
        lines += [f"  - {tenant_line(t)}" for t in msg.tenants]
    else:
        lines.append("Affected tenants: none isolated (platform-wide failure).")

    runbooks = [u for u in msg.runbook_urls if u]
    if runbooks:
        lines += ["", "Runbooks:"]
        lines += [f"  {u}" for u in runbooks]  # URLs on their own lines stay clickable
    if msg.incident_url:
        lines += ["", "Incident page:", f"  {msg.incident_url}"]

    lines += [
        "",
        "-- ",  # signature separator: clients fold or dim what follows
        f"Sent by {SOURCE} for {msg.event.value}"
        + ("." if msg.event_time is None else f" ({format_time(msg.event_time)})."),
    ]
    return "\n".join(lines) + "\n"


def body_encoding(body: str, *, eight_bit: bool) -> str:
    """The Content-Transfer-Encoding for `body` (see the module's docstring)."""
    if all(len(line) <= LINE_MAX for line in body.encode("utf-8").splitlines()):
        if body.isascii():
            return "7bit"
        if eight_bit:
            return "8bit"
    return "quoted-printable"


def render_message(
    msg: IncidentMessage,
    *,
    sender: str,
    recipients: Sequence[str],
    message_key: str,
    thread_key: str | None = None,
    date: datetime | None = None,
    eight_bit: bool = False,
    utf8: bool = False,
) -> EmailMessage:
    """The e-mail for `msg`. `date` (the Date header) defaults to now: the time of
    sending, so clients list an incident's messages in the order they were sent.
    `eight_bit`/`utf8`: the server offers 8BITMIME / SMTPUTF8 (and it is needed)."""
    em = EmailMessage(policy=_BUILD_POLICY)
    _set_subject(em, headline(msg), utf8=utf8)
    em["From"] = sender
    em["To"] = ", ".join(recipients)
    em["Date"] = format_datetime(date or datetime.now(UTC))
    # Raw, so that the folder does not move a long id to a line of its own.
    em.set_raw("Message-ID", message_id(msg.incident_id, message_key, sender))
    if thread_key and thread_key != message_key:
        root = message_id(msg.incident_id, thread_key, sender)
        em.set_raw("In-Reply-To", root)
        em.set_raw("References", root)
    # RFC 3834: automatic message, so out-of-office replies are not sent back.
    em["Auto-Submitted"] = "auto-generated"
    em["X-Incident-ID"] = msg.incident_id
    em["X-Incident-Priority"] = msg.priority.value
    em["X-Incident-Event"] = msg.event.value
    body = render_body(msg)
    em.set_content(body, charset="utf-8", cte=body_encoding(body, eight_bit=eight_bit or utf8))
    return em


def _set_subject(em: EmailMessage, subject: str, *, utf8: bool) -> None:
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 1] + "…"
    if subject.isascii() or utf8:
        em["Subject"] = subject
        return
    # Encoded words of at most 75 characters, one per line after 'Subject: ', with the
    # spaces inside them (RFC 2047 §2, §5): the standard library's encoder does this.
    encoded = Header(subject, "utf-8", maxlinelen=QP_LINE_MAX, header_name="Subject")
    em.set_raw("Subject", encoded.encode(linesep="\r\n"))


def to_wire(em: EmailMessage, *, eight_bit: bool, utf8: bool) -> bytes:
    return em.as_bytes(policy=wire_policy(eight_bit=eight_bit, utf8=utf8))
