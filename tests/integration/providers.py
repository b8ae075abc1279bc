"""Local providers that enforce what the real ones do (issue 18).

- `StrictPagerDuty`: the Events API v2's checks (test_channels.pagerduty_errors), plus
  its 512 KB body limit, summaries of at most 1,024 characters and known severities,
  answered 400 like PagerDuty.
- `StrictSlack`: Block Kit's limits (test_channels.slack_errors: 50 blocks, header 150,
  section text 3,000, fields 2,000) and an incoming webhook's rate: more than `rate`
  messages a second (with a burst of `burst`) is answered 429 with Retry-After.
- `StrictSmtp`: an aiosmtpd handler refusing the 101st recipient of a transaction with
  452, 8-bit data sent without BODY=8BITMIME (or SMTPUTF8) with 554, lines over 998
  octets and encoded words over 75 characters with 554; it can hide 8BITMIME from its
  EHLO (SMTPUTF8 is hidden unless asked for), and greylist (451) or refuse (550) chosen
  recipients.
"""

from __future__ import annotations

import asyncio
import email
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.integration.test_channels import pagerduty_errors, slack_errors

PD_BODY_MAX = 512 * 1024
PD_SEVERITIES = {"critical", "error", "warning", "info"}
RCPT_MAX = 100
LINE_MAX = 998
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=")


@dataclass
class StrictPagerDuty:
    events: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * PD_BODY_MAX)
        app.router.add_post("/v2/enqueue", self.enqueue)
        return app

    async def enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.sizes.append(len(raw))
        if len(raw) > PD_BODY_MAX:
            return self._refuse(400, "Request body exceeds 512 KB")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse(400, "Event object is invalid")
        errors = pagerduty_errors(body)
        payload = body.get("payload") if isinstance(body, dict) else None
        if isinstance(payload, dict):
            summary = payload.get("summary")
            if isinstance(summary, str) and len(summary) > 1024:
                errors.append("'payload.summary' is longer than 1024 characters")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append("'payload.severity' is invalid")
        if errors:
            return self._refuse(400, "; ".join(sorted(set(errors))))
        self.events.append(body)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]},
            status=202,
        )

    def _refuse(self, status: int, message: str) -> web.Response:
        self.refusals.append((status, message))
        return web.json_response(
            {"status": "invalid event", "message": "Event object is invalid", "errors": [message]},
            status=status,
        )


@dataclass
class StrictSlack:
    rate: float = 1.0  # messages a second, per webhook
    burst: float = 1.0
    retry_after: int = 1
    posts: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    answers: list[tuple[int, str]] = field(default_factory=list)  # (status, 'ok' or error)
    forced_429s: int = 0
    _tokens: float | None = None
    _updated: float = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/services/T0/B0/hook", self.webhook)
        return app

    def _admit(self) -> bool:
        now = time.monotonic()
        if self._tokens is None:
            self._tokens, self._updated = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def webhook(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        if self.forced_429s > 0 or not self._admit():
            self.forced_429s = max(0, self.forced_429s - 1)
            self.answers.append((429, "rate_limited"))
            return web.Response(
                status=429, text="rate_limited", headers={"Retry-After": str(self.retry_after)}
            )
        try:
            body = await request.json()
        except ValueError:
            self.answers.append((400, "invalid_payload"))
            return web.Response(status=400, text="invalid_payload")
        error = slack_errors(body)
        if error:
            self.answers.append((400, error))
            return web.Response(status=400, text=error)
        self.posts.append(body)
        self.answers.append((200, "ok"))
        return web.Response(text="ok")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    raw: bytes
    message: EmailMessage


class StrictSmtp:
    """An aiosmtpd handler that answers the way strict MTAs do (see the module)."""

    def __init__(
        self,
        *,
        offer_8bitmime: bool = True,
        offer_smtputf8: bool = False,
        rcpt_reply: Callable[[str], str | None] = lambda _a: None,
    ) -> None:
        self.offer_8bitmime = offer_8bitmime
        self.offer_smtputf8 = offer_smtputf8
        self.rcpt_reply = rcpt_reply
        self.received: list[Received] = []
        self.refused_data: list[str] = []
        self.rcpt_452: int = 0
        self.rcpt_seen: list[str] = []

    async def handle_EHLO(  # aiosmtpd's hook names
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        hidden = [] if self.offer_8bitmime else ["8BITMIME"]
        if not self.offer_smtputf8:
            hidden.append("SMTPUTF8")
        return [r for r in responses if not any(h in r.upper() for h in hidden)]

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.rcpt_seen.append(address)
        if len(envelope.rcpt_tos) >= RCPT_MAX:
            self.rcpt_452 += 1
            return "452 4.5.3 Too many recipients"
        reply = self.rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        options = [o.upper() for o in envelope.mail_options]
        problem = self._problem(raw, options)
        if problem:
            self.refused_data.append(problem)
            return f"554 5.6.0 {problem}"
        parsed = email.message_from_bytes(raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage) and envelope.mail_from is not None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), options, raw, parsed)
        )
        return "250 2.0.0 Ok: queued"

    @staticmethod
    def _problem(raw: bytes, options: list[str]) -> str | None:
        announced = "BODY=8BITMIME" in options or "SMTPUTF8" in options
        if not raw.isascii() and not announced:
            return "8-bit data without BODY=8BITMIME"
        lines = raw.split(b"\r\n")
        if any(len(line) > LINE_MAX for line in lines):
            return "line longer than 998 octets"
        head = raw.split(b"\r\n\r\n", 1)[0]
        if any(len(w) > 75 for w in ENCODED_WORD.findall(head)):
            return "encoded word longer than 75 characters"
        return None


async def wait_for(check: Callable[[], bool], *, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
