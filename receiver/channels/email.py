"""E-mail over SMTP (aiosmtplib): one plain-text message per event and audience.

The outbox holds one row per audience (the operators, each tenant's admins) with each
recipient's state; `send_to` delivers to the recipients still pending and reports on
each of them, so the worker writes `notification.sent` only once all accepted:

- one connection, then SMTP transactions of at most 100 recipients (RFC 5321 §4.5.3.1);
- a recipient refused with 4xx stays pending (retried later, alone), 5xx is refused for
  good; a transaction cut short leaves its recipients pending;
- MAIL FROM announces BODY=8BITMIME when the body is 8-bit and the server offers it
  (otherwise the body is quoted-printable), and SMTPUTF8 when an address needs it and
  the server offers it (otherwise that recipient is refused: it cannot be reached);
- TLS: implicit (port 465), STARTTLS required, none, or STARTTLS when offered (auto). A
  certificate that does not verify, or credentials the server refuses, is a
  configuration error: not retried, shown in /readyz.

Rendering (headers, encodings, Message-IDs, threading) is in `email_render`.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Sequence
from email.utils import parseaddr
from typing import Literal

import aiosmtplib

from receiver.channels.base import DeliveryError, RecipientsAttempt, excerpt, unrenderable
from receiver.channels.email_render import render_message, to_wire
from receiver.domain.notification import Channel, IncidentMessage
from receiver.domain.recipients import (
    ACCEPTED,
    PENDING,
    REFUSED,
    Recipient,
    all_accepted,
    describe_unaccepted,
    merge,
    parse_addresses,
    pending_recipients,
)

log = logging.getLogger(__name__)

TlsMode = Literal["implicit", "starttls", "none", "auto"]
#: RFC 5321 §4.5.3.1.8: a server must take 100 recipients per transaction.
MAX_RECIPIENTS = 100
_START_TLS: dict[str, bool | None] = {"implicit": False, "starttls": True, "none": False}


def envelope_address(address: str) -> str:
    """The address as it goes into RCPT TO: an internationalised domain as IDNA (ASCII),
    so only a non-ASCII local part needs SMTPUTF8."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def _reply(code: int, message: str) -> str:
    return excerpt(f"{code} {message}", limit=200)


def _state_of(code: int) -> str:
    return REFUSED if 500 <= code < 600 else PENDING


class EmailSender:
    """Sends over a fresh SMTP connection per message; reports on every recipient."""

    channel = Channel.EMAIL

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        recipients: Sequence[str] = (),
        timeout: float = 10,
        tls: TlsMode = "auto",
        ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        max_recipients: int = MAX_RECIPIENTS,
    ) -> None:
        if not host:
            raise ValueError("SMTP host is empty")
        if not sender:
            raise ValueError("e-mail sender is empty")
        if tls not in ("implicit", "starttls", "none", "auto"):
            raise ValueError(f"unknown SMTP TLS mode {tls!r}")
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = tuple(parse_addresses(list(recipients)))
        self._timeout = timeout
        self._tls = tls
        self._ca_file = ca_file
        self._username = username
        self._password = password
        self._max = max(1, min(max_recipients, MAX_RECIPIENTS))

    def __repr__(self) -> str:  # no password
        return (
            f"EmailSender(host={self._host!r}, port={self._port}, tls={self._tls!r}, "
            f"sender={self._sender!r})"
        )

    @property
    def operators(self) -> tuple[str, ...]:
        """The configured recipients (RECEIVER_EMAIL_TO)."""
        return self._recipients

    async def send(self, msg: IncidentMessage) -> str:
        """`msg` to the configured recipients, all of them or a DeliveryError."""
        if not self._recipients:
            raise DeliveryError(self.channel, "no recipients", retryable=False)
        attempt = await self.send_to(
            msg, self._recipients, message_key=uuid.uuid4().hex, thread_key=None
        )
        recipients = merge(pending_recipients(self._recipients), attempt.outcomes)
        if all_accepted(recipients):
            return attempt.reference
        if attempt.error is not None:
            raise attempt.error
        retryable = any(r.state == PENDING for r in recipients)
        codes = sorted({r.reply[:3] for r in recipients if r.reply and r.reply[:3].isdigit()})
        raise DeliveryError(
            self.channel,
            "not every recipient accepted" + (f": SMTP {', '.join(codes)}" if codes else ""),
            retryable=retryable,
            status=int(codes[0]) if codes else None,
            detail=describe_unaccepted(recipients),
        )

    async def send_to(
        self,
        msg: IncidentMessage,
        recipients: Sequence[str],
        *,
        message_key: str,
        thread_key: str | None,
    ) -> RecipientsAttempt:
        """One attempt at `recipients`. Raises DeliveryError when nothing was sent (the
        connection, TLS or login failed); otherwise reports on each recipient."""
        if not recipients:
            raise DeliveryError(self.channel, "no recipients", retryable=False)
        async with self._connected() as smtp:
            return await self._transactions(
                smtp, msg, list(recipients), message_key=message_key, thread_key=thread_key
            )

    async def _transactions(
        self,
        smtp: aiosmtplib.SMTP,
        msg: IncidentMessage,
        recipients: list[str],
        *,
        message_key: str,
        thread_key: str | None,
    ) -> RecipientsAttempt:
        eight_bit = smtp.supports_extension("8bitmime")
        needs_utf8 = [a for a in recipients if not envelope_address(a).isascii()]
        utf8 = bool(needs_utf8) and smtp.supports_extension("smtputf8")
        outcomes: dict[str, Recipient] = {}
        if needs_utf8 and not utf8:
            for a in needs_utf8:
                outcomes[a] = Recipient(a, REFUSED, "needs SMTPUTF8, which the server lacks")
            recipients = [a for a in recipients if a not in outcomes]
        if not recipients:
            return RecipientsAttempt(outcomes)
        try:
            em = render_message(
                msg,
                sender=self._sender,
                recipients=recipients,
                message_key=message_key,
                thread_key=thread_key,
                eight_bit=eight_bit,
                utf8=utf8,
            )
            wire = to_wire(em, eight_bit=eight_bit, utf8=utf8)
        except (ValueError, KeyError, UnicodeError) as exc:
            raise unrenderable(self.channel, exc) from exc
        options = ["SMTPUTF8"] if utf8 else []
        if eight_bit and not wire.isascii():
            options.append("BODY=8BITMIME")
        reference = ""
        for start in range(0, len(recipients), self._max):
            chunk = recipients[start : start + self._max]
            error, answer = await self._transaction(smtp, chunk, wire, options, outcomes)
            reference = answer or reference
            if error is not None:
                return RecipientsAttempt(outcomes, reference, error)
        return RecipientsAttempt(outcomes, reference)

    async def _transaction(
        self,
        smtp: aiosmtplib.SMTP,
        chunk: list[str],
        wire: bytes,
        options: list[str],
        outcomes: dict[str, Recipient],
    ) -> tuple[DeliveryError | None, str]:
        """One MAIL/RCPT/DATA for `chunk`, its outcomes written into `outcomes`."""
        envelope = {envelope_address(a): a for a in chunk}
        try:
            refused, answer = await smtp.sendmail(
                self._envelope_from(), list(envelope), wire, mail_options=options
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            for r in exc.recipients:
                address = envelope.get(r.recipient, r.recipient)
                outcomes[address] = Recipient(address, _state_of(r.code), _reply(r.code, r.message))
            return None, ""
        except aiosmtplib.SMTPResponseException as exc:
            # The sender or the message was refused: the same for every transaction.
            state = _state_of(exc.code)
            for a in chunk:
                outcomes[a] = Recipient(a, state, _reply(exc.code, exc.message))
            return _smtp_reply_error(exc), ""
        except (aiosmtplib.SMTPException, TimeoutError, OSError) as exc:
            return self._transport_error(exc), ""
        reference = excerpt(answer, limit=120)
        for env, a in envelope.items():
            if env in refused:
                code, message = refused[env].code, refused[env].message
                outcomes[a] = Recipient(a, _state_of(code), _reply(code, message))
            else:
                outcomes[a] = Recipient(a, ACCEPTED, reference or "250")
        return None, reference

    def _envelope_from(self) -> str:
        return envelope_address(parseaddr(self._sender)[1] or self._sender)

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[aiosmtplib.SMTP]:
        smtp = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            use_tls=self._tls == "implicit",
            start_tls=_START_TLS.get(self._tls),
            cert_bundle=self._ca_file,
            username=self._username,
            password=self._password,
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise DeliveryError(
                self.channel,
                f"authentication refused by {self._host}:{self._port}: SMTP {exc.code}",
                retryable=False,
                status=exc.code,
                detail=excerpt(exc.message, secrets=self._secrets()),
                config_error=True,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:  # a 421/554 greeting, say
            smtp.close()
            raise _smtp_reply_error(exc) from exc
        except (aiosmtplib.SMTPException, TimeoutError, OSError, ValueError) as exc:
            smtp.close()
            raise self._transport_error(exc) from exc
        try:
            yield smtp
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, TimeoutError, OSError):
                await smtp.quit()
            smtp.close()

    def _transport_error(self, exc: BaseException) -> DeliveryError:
        """Classify what went wrong talking to the server (no SMTP reply to go by)."""
        detail = excerpt(str(exc) or type(exc).__name__, secrets=self._secrets())
        where = f"{self._host}:{self._port}"
        tls_error = _tls_cause(exc)
        if tls_error is not None:
            what = (
                "certificate verification failed"
                if isinstance(tls_error, ssl.SSLCertVerificationError)
                else "TLS handshake failed"
            )
            return DeliveryError(
                self.channel,
                f"{what} for {where} (RECEIVER_SMTP_TLS={self._tls})",
                retryable=False,
                detail=excerpt(str(tls_error), secrets=self._secrets()),
                config_error=True,
            )
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return DeliveryError(
                self.channel, f"SMTP timed out after {self._timeout:g}s", retryable=True
            )
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError):
            return DeliveryError(
                self.channel, f"SMTP connection to {where} failed", retryable=True, detail=detail
            )
        if isinstance(exc, OSError):
            return DeliveryError(
                self.channel, f"SMTP connection to {where} failed", retryable=True, detail=detail
            )
        # STARTTLS or AUTH not offered, bad options: configuration, not luck.
        return DeliveryError(
            self.channel, "SMTP client error", retryable=False, detail=detail, config_error=True
        )

    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._password,) if s)


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc` (aiosmtplib wraps it in SMTPConnectError), if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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
