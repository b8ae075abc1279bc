"""E-mail over SMTP (aiosmtplib): one plain-text message per event.

Messages about the same incident thread together: the opening message's Message-ID is
derived from the incident id, and every later message refers to it.
"""

from __future__ import annotations

import email.policy
import logging
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

import aiosmtplib

from receiver.channels.base import DeliveryError, excerpt, unrenderable
from receiver.domain.notification import (
    SOURCE,
    Channel,
    IncidentMessage,
    NotificationEvent,
    email_recipients,
    format_time,
    headline,
    severity_word,
    tenant_line,
    what_happened,
)

log = logging.getLogger(__name__)

SUBJECT_MAX = 200
_WIDTH = 76

#: How the message goes on the wire. Python's header folder (3.11, and aiosmtplib's
#: flattening uses it with 78 columns) can fold between two RFC 2047 encoded words, and
#: readers then drop the space between them ("Ünïcode tïtle" arrives as "Ünïcodetïtle").
#: Folding only at SMTP's hard limit of 998 keeps a (capped) subject on one line.
WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)


def _domain_of(sender: str) -> str:
    address = parseaddr(sender)[1] or sender
    domain = address.rpartition("@")[2].strip().strip(">")
    return domain if domain and "." in domain else "blast-radius-receiver.invalid"


def thread_id(incident_id: str, sender: str) -> str:
    """The Message-ID of an incident's first e-mail, which later ones refer to."""
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in incident_id)
    return f"<{safe}@{_domain_of(sender)}>"


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


def render_message(
    msg: IncidentMessage,
    *,
    sender: str,
    recipients: Sequence[str],
    date: datetime | None = None,
) -> EmailMessage:
    """The e-mail for `msg`. `date` (the Date header) defaults to now: the time of
    sending, so clients list an incident's messages in the order they were sent."""
    em = EmailMessage()
    subject = headline(msg)
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 1] + "…"
    em["Subject"] = subject
    em["From"] = sender
    em["To"] = ", ".join(recipients)
    em["Date"] = format_datetime(date or datetime.now(UTC))
    root = thread_id(msg.incident_id, sender)
    if msg.event is NotificationEvent.OPENED:
        em["Message-ID"] = root
    else:
        em["Message-ID"] = make_msgid(domain=_domain_of(sender))
        em["In-Reply-To"] = root
        em["References"] = root
    # RFC 3834: automatic message, so out-of-office replies are not sent back.
    em["Auto-Submitted"] = "auto-generated"
    em["X-Incident-ID"] = msg.incident_id
    em["X-Incident-Priority"] = msg.priority.value
    em["X-Incident-Event"] = msg.event.value
    em.set_content(render_body(msg), charset="utf-8")
    return em


class EmailSender:
    """Sends each message over a fresh SMTP connection; returns the server's answer."""

    channel = Channel.EMAIL

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        recipients: Sequence[str],
        timeout: float = 10,
        use_tls: bool = False,
        start_tls: bool | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not host:
            raise ValueError("SMTP host is empty")
        if not sender:
            raise ValueError("e-mail sender is empty")
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = tuple(recipients)
        self._timeout = timeout
        self._use_tls = use_tls
        self._start_tls = start_tls
        self._username = username
        self._password = password

    def __repr__(self) -> str:  # no password
        return f"EmailSender(host={self._host!r}, port={self._port}, sender={self._sender!r})"

    def recipients_for(self, msg: IncidentMessage) -> list[str]:
        return email_recipients(msg, configured=self._recipients)

    async def send(self, msg: IncidentMessage) -> str:
        recipients = self.recipients_for(msg)
        if not recipients:
            raise DeliveryError(self.channel, "no recipients", retryable=False)
        try:
            em = render_message(msg, sender=self._sender, recipients=recipients)
            wire = em.as_bytes(policy=WIRE_POLICY)
        except (ValueError, KeyError) as exc:
            raise unrenderable(self.channel, exc) from exc
        envelope_from = parseaddr(self._sender)[1] or self._sender
        try:
            refused, answer = await aiosmtplib.send(
                wire,
                sender=envelope_from,
                recipients=recipients,
                hostname=self._host,
                port=self._port,
                timeout=self._timeout,
                use_tls=self._use_tls,
                start_tls=self._start_tls,
                username=self._username,
                password=self._password,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _recipients_refused(exc) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_reply_error(exc) from exc
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise DeliveryError(
                self.channel, f"SMTP timed out after {self._timeout:g}s", retryable=True
            ) from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError) as exc:
            raise DeliveryError(
                self.channel,
                f"SMTP connection to {self._host}:{self._port} failed",
                retryable=True,
                detail=excerpt(str(exc) or type(exc).__name__, secrets=self._secrets()),
            ) from exc
        except (aiosmtplib.SMTPException, ValueError) as exc:
            # STARTTLS or AUTH not offered, bad options: configuration, not luck.
            raise DeliveryError(
                self.channel,
                "SMTP client error",
                retryable=False,
                detail=excerpt(str(exc) or type(exc).__name__, secrets=self._secrets()),
            ) from exc
        reference = excerpt(answer, limit=120)
        if refused:
            # Delivered to the rest: retrying would send them duplicates, so this is a
            # success that names who did not get it.
            names = ", ".join(f"{r} ({resp.code})" for r, resp in refused.items())
            log.warning("e-mail for %s refused for some recipients: %s", msg.incident_id, names)
            reference = excerpt(f"{reference}; refused: {names}", limit=300)
        return reference

    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._password,) if s)


def _smtp_reply_error(exc: aiosmtplib.SMTPResponseException) -> DeliveryError:
    what = {
        aiosmtplib.SMTPSenderRefused: "sender refused",
        aiosmtplib.SMTPRecipientRefused: "recipient refused",
        aiosmtplib.SMTPDataError: "message refused",
        aiosmtplib.SMTPAuthenticationError: "authentication failed",
        aiosmtplib.SMTPHeloError: "greeting refused",
    }.get(type(exc), "SMTP error")
    return DeliveryError(
        Channel.EMAIL,
        f"{what}: SMTP {exc.code}",
        retryable=not 500 <= exc.code < 600,  # 4xx transient; odd codes: try again
        status=exc.code,
        detail=excerpt(exc.message),
    )


def _recipients_refused(exc: aiosmtplib.SMTPRecipientsRefused) -> DeliveryError:
    codes = [r.code for r in exc.recipients]
    detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
    transient = [c for c in codes if not 500 <= c < 600]
    return DeliveryError(
        Channel.EMAIL,
        f"every recipient refused: SMTP {', '.join(str(c) for c in sorted(set(codes)))}",
        # Worth retrying when at least one refusal was transient.
        retryable=bool(transient) or not codes,
        status=(transient or codes)[0] if codes else None,
        detail=excerpt(detail),
    )
