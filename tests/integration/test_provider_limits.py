"""Notifications the real providers accept (issue 18), against local providers that
enforce their limits (tests/integration/providers.py), through the outbox and its worker
on real PostgreSQL: incidents of 1, 150 and 5,000 tenants on every channel, e-mail per
audience and per recipient, 8-bit and long lines, implicit TLS and certificate failures,
pacing and 429s.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.channels import build_senders
from receiver.channels.base import DeliveryError, Sender
from receiver.channels.email import EmailSender
from receiver.channels.pacing import Pacer
from receiver.channels.pagerduty import BODY_BUDGET_BYTES, PagerDutySender, render_event
from receiver.channels.slack import SlackSender, clip, render_payload
from receiver.channels.worker import OutboxWorker, RetryPolicy
from receiver.db.engine import create_engine, session_factory
from receiver.db.transaction import in_transaction
from receiver.domain.notification import (
    Channel,
    IncidentMessage,
    NotificationEvent,
    TenantSummary,
)
from receiver.domain.tiers import Priority, Tier
from receiver.embedded_pg import free_port
from receiver.errors import ReceiverError
from receiver.service import outbox as outbox_service
from tests.conftest import make_settings
from tests.integration.providers import (
    StrictPagerDuty,
    StrictSlack,
    StrictSmtp,
    wait_for,
)
from tests.integration.test_channels import ROUTING_KEY, make_msg

Rows = Callable[..., list[tuple[Any, ...]]]
OPERATORS = ["oncall@ops.example", "sre@ops.example"]
FROM = "Blast Radius <alerts@receiver.example>"
TIERS = (Tier.BRONZE, Tier.SILVER, Tier.GOLD, Tier.PLATINUM, None)
TENANT_ID = re.compile(r"tenant-\d{5}")
TENANT_NAME = re.compile(r"Customer \d{5}")


def tenants(n: int) -> tuple[TenantSummary, ...]:
    """`n` tenants of mixed tiers; every third has two admins, every seventh none."""
    out = []
    for i in range(n):
        admins = None if i % 7 == 6 else f"admin@t{i:05d}.example"
        if i % 3 == 0 and admins:
            admins += f", Second Admin <second@t{i:05d}.example>"
        out.append(
            TenantSummary(f"tenant-{i:05d}", TIERS[i % 5], f"Customer {i:05d}", "open", admins)
        )
    return tuple(out)


def incident(n: int, **overrides: Any) -> IncidentMessage:
    fields: dict[str, Any] = {
        "tenants": tenants(n),
        "title": f"{n} tenants failing (tenant-00000, tenant-00001, ...): TenantErrorRateHigh",
        "note": "tenant-00001 first",
    }
    fields.update(overrides)
    return make_msg(**fields)


# --- servers ----------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., int]]:
    controllers: list[Controller] = []

    def start(handler: StrictSmtp, **kw: Any) -> int:
        port = free_port()
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, server_hostname="mx.test", **kw
        )
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def pagerduty(aiohttp_server: Any) -> tuple[StrictPagerDuty, str]:
    fake = StrictPagerDuty()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("/v2/enqueue"))


@pytest.fixture
async def slack(aiohttp_server: Any) -> tuple[StrictSlack, str]:
    fake = StrictSlack(rate=50, burst=5)
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("/services/T0/B0/hook"))


@pytest.fixture
async def sessions(clean_db: str) -> AsyncIterator[Any]:
    engine = create_engine(make_settings(clean_db))
    yield session_factory(engine)
    await engine.dispose()


async def enqueue(sessions: Any, msg: IncidentMessage, channels: set[Channel]) -> None:
    async def work(session: AsyncSession) -> None:
        await outbox_service.enqueue(session, msg, enabled=channels, operators=OPERATORS)

    await in_transaction(sessions, work, what="test enqueue")


def worker(sessions: Any, senders: dict[Channel, Sender], **policy: Any) -> OutboxWorker:
    values: dict[str, Any] = {"base_seconds": 0.05, "max_seconds": 0.2}
    values.update(policy)
    return OutboxWorker(
        sessions=sessions,
        senders=senders,
        policy=RetryPolicy(**values),
        pacer=Pacer({}),
    )


async def drain(w: OutboxWorker, sql: Rows, *, seconds: float = 120) -> None:
    async def once() -> bool:
        # As the worker's own loop does: a transient database error (a statement past its
        # timeout on a starved CI machine, say) is waited out, not fatal; the deadline
        # below still bounds the whole drain.
        with contextlib.suppress(ReceiverError):
            await w.run_once()
        return sql("SELECT count(*) FROM notifications WHERE status = 'pending'") == [(0,)]

    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    while not await once():
        assert datetime.now(UTC) < deadline, "outbox not drained in time"


# --- 1, 150 and 5,000 tenants on every channel --------------------------------------------


@pytest.mark.parametrize("n", [1, 150, 5000])
async def test_an_incident_of_n_tenants_reaches_every_channel_within_its_limits(
    n: int,
    sessions: Any,
    sql: Rows,
    http: aiohttp.ClientSession,
    pagerduty: tuple[StrictPagerDuty, str],
    slack: tuple[StrictSlack, str],
    smtp_server: Callable[..., int],
) -> None:
    pd, pd_url = pagerduty
    sl, sl_url = slack
    mx = StrictSmtp()
    senders = build_senders(
        session=http,
        slack_webhook_url=sl_url,
        pagerduty_routing_key=ROUTING_KEY,
        pagerduty_events_url=pd_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server(mx),
        email_from=FROM,
        email_to=", ".join(OPERATORS),
        smtp_tls="none",
    )
    msg = incident(n)
    await enqueue(sessions, msg, set(Channel))
    await drain(worker(sessions, senders), sql)

    assert sql("SELECT status, count(*) FROM notifications GROUP BY status") == [
        ("sent", sql("SELECT count(*) FROM notifications")[0][0])
    ]
    # PagerDuty: one trigger, far below 512 KB, the first tenants by tier and the count.
    (event,) = pd.events
    assert pd.refusals == [] and max(pd.sizes) <= BODY_BUDGET_BYTES
    details = event["payload"]["custom_details"]
    assert details["tenant_count"] == n
    assert len(details["tenants"]) == min(n, 20)
    assert details["tenants_not_listed"] == n - min(n, 20)
    if n >= 4:
        assert all("platinum tier" in line for line in details["tenants"][: min(n // 5, 20)])
    assert len(event["payload"]["summary"]) <= 1024
    # Slack: one message within Block Kit's limits.
    (post,) = sl.posts
    assert len(post["blocks"]) <= 50 and f"*Tenants ({n})*" in str(post)
    # E-mail: the operators' message names every tenant; each tenant's admins get theirs.
    by_rcpt = {tuple(r.rcpt_tos): r for r in mx.received}
    ops = by_rcpt.pop(tuple(OPERATORS))
    assert f"Affected tenants ({n}):" in ops.message.get_content()
    expected = {
        t.tenant_id: tuple(a.split("<")[-1].strip(" >") for a in t.admin_email.split(","))
        for t in msg.tenants
        if t.admin_email
    }
    assert len(by_rcpt) == len(expected) == len(mx.received) - 1
    for tenant_id, admins in expected.items():
        mail = by_rcpt[admins]
        assert_private(mail.raw, tenant_id)
        assert mail.message["To"] == ", ".join(admins)
    assert mx.refused_data == [] and mx.rcpt_452 == 0


def assert_private(raw: bytes, tenant_id: str) -> None:
    """Nothing in the message (headers, envelope-visible To, text) names another tenant."""
    text = raw.decode("utf-8", errors="replace")
    number = tenant_id.split("-")[1]
    assert set(TENANT_ID.findall(text)) == {tenant_id}
    assert set(TENANT_NAME.findall(text)) <= {f"Customer {number}"}
    assert set(re.findall(r"t(\d{5})\.example", text)) == {number}


# --- e-mail: transactions, refusals, retries ------------------------------------------------


async def test_150_operators_go_in_two_transactions_the_server_accepts(
    sessions: Any, sql: Rows, smtp_server: Callable[..., int]
) -> None:
    mx = StrictSmtp()
    many = [f"op{i:03d}@ops.example" for i in range(150)]
    sender = EmailSender("127.0.0.1", smtp_server(mx), sender=FROM, recipients=many, tls="none")
    assert await sender.send(make_msg(tenants=())) == "2.0.0 Ok: queued"
    assert [len(r.rcpt_tos) for r in mx.received] == [100, 50]
    assert mx.rcpt_452 == 0
    assert mx.received[0].message["Message-ID"] == mx.received[1].message["Message-ID"]

    # The server does refuse the 101st recipient of a transaction, as RFC 5321 allows.
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sender._port) as smtp:
        refused, _ = await smtp.sendmail("a@x.example", many[:101], b"Subject: x\r\n\r\nx\r\n")
    assert list(refused) == [many[100]] and refused[many[100]].code == 452


async def test_a_greylisted_recipient_is_retried_alone_and_then_the_row_is_sent(
    sessions: Any, sql: Rows, smtp_server: Callable[..., int]
) -> None:
    greylisted = {"sre@ops.example": 2}

    def rcpt(address: str) -> str | None:
        if greylisted.get(address, 0) > 0:
            greylisted[address] -= 1
            return "451 4.7.1 Greylisted, try again later"
        return None

    mx = StrictSmtp(rcpt_reply=rcpt)
    sender = EmailSender(
        "127.0.0.1", smtp_server(mx), sender=FROM, recipients=OPERATORS, tls="none"
    )
    await enqueue(sessions, make_msg(tenants=()), {Channel.EMAIL})
    await drain(worker(sessions, {Channel.EMAIL: sender}), sql)

    assert [r.rcpt_tos for r in mx.received] == [["oncall@ops.example"], ["sre@ops.example"]]
    assert mx.rcpt_seen.count("oncall@ops.example") == 1  # never sent twice
    audit = sql(
        "SELECT action, details FROM audit_log WHERE action LIKE 'notification.%' ORDER BY id"
    )
    assert [(a, d["attempt"], d.get("will_retry")) for a, d in audit] == [
        ("notification.failed", 1, True),
        ("notification.failed", 2, True),
        ("notification.sent", 3, None),
    ]
    assert audit[0][1]["pending"] == ["sre@ops.example"]
    assert audit[0][1]["recipients"] == {"accepted": 1, "pending": 1, "refused": 0}
    assert "not accepted yet: sre@ops.example (451 4.7.1" in audit[0][1]["error"]
    ((status, recipients),) = sql("SELECT status, recipients FROM notifications")
    assert status == "sent" and {r["state"] for r in recipients} == {"accepted"}


async def test_a_permanently_refused_recipient_fails_the_row_naming_it(
    sessions: Any, sql: Rows, smtp_server: Callable[..., int]
) -> None:
    mx = StrictSmtp(rcpt_reply=lambda a: "550 5.1.1 No such user" if a.startswith("sre@") else None)
    sender = EmailSender(
        "127.0.0.1", smtp_server(mx), sender=FROM, recipients=OPERATORS, tls="none"
    )
    await enqueue(sessions, make_msg(tenants=()), {Channel.EMAIL})
    await drain(worker(sessions, {Channel.EMAIL: sender}), sql)
    assert [r.rcpt_tos for r in mx.received] == [["oncall@ops.example"]]
    ((action, details),) = sql(
        "SELECT action, details FROM audit_log WHERE action LIKE 'notification.%'"
    )
    assert action == "notification.failed" and details["will_retry"] is False
    assert details["refused"] == ["sre@ops.example"]
    assert "refused: sre@ops.example (550 5.1.1 No such user)" in details["error"]
    assert sql("SELECT status FROM notifications") == [("failed",)]


async def test_follow_ups_thread_under_each_audiences_first_message(
    sessions: Any, sql: Rows, smtp_server: Callable[..., int]
) -> None:
    mx = StrictSmtp()
    sender = EmailSender(
        "127.0.0.1", smtp_server(mx), sender=FROM, recipients=OPERATORS, tls="none"
    )
    w = worker(sessions, {Channel.EMAIL: sender})
    opened = incident(2)
    resolved = incident(2, event=NotificationEvent.RESOLVED, status="resolved", actor="bob")
    for msg in (opened, resolved):
        await enqueue(sessions, msg, {Channel.EMAIL})
        await drain(w, sql)
    by_audience: dict[tuple[str, ...], list[Any]] = {}
    for r in mx.received:
        by_audience.setdefault(tuple(r.rcpt_tos), []).append(r.message)
    assert len(by_audience) == 3  # operators, tenant-00000, tenant-00001
    ids = set()
    for first, follow_up in by_audience.values():
        assert first["In-Reply-To"] is None
        assert follow_up["In-Reply-To"] == follow_up["References"] == first["Message-ID"]
        assert first["Message-ID"].endswith("@receiver.example>")
        ids |= {first["Message-ID"], follow_up["Message-ID"]}
    assert len(ids) == 6


# --- e-mail: 8-bit, long lines, encoded words, SMTPUTF8 ---------------------------------------

UNICODE_TITLE = "Ünïcode tïtle — " + "wörter " * 30


@pytest.mark.parametrize("offer_8bitmime", [True, False], ids=["8bitmime", "7bit-only"])
async def test_8bit_content_is_announced_or_encoded(
    offer_8bitmime: bool, smtp_server: Callable[..., int]
) -> None:
    mx = StrictSmtp(offer_8bitmime=offer_8bitmime)
    sender = EmailSender(
        "127.0.0.1", smtp_server(mx), sender=FROM, recipients=OPERATORS, tls="none"
    )
    long_name = "Ä" + "x" * 1500  # a line over 998 octets in the body
    msg = make_msg(
        title=UNICODE_TITLE,
        note="Grüße",
        tenants=(TenantSummary("acme", Tier.GOLD, long_name, "open"),),
    )
    await sender.send(msg)
    (got,) = mx.received
    assert mx.refused_data == []
    cte = got.message["Content-Transfer-Encoding"]
    # The long line forces quoted-printable either way; otherwise 8bit when offered.
    assert cte == "quoted-printable"
    assert ("BODY=8BITMIME" in got.mail_options) is (not got.raw.isascii())
    body = got.message.get_content()
    assert long_name in body and "Grüße" in body
    assert (
        got.message["Subject"]
        == f"[P0] INC-20240501-0001 opened: {' '.join(UNICODE_TITLE.split())}"[:199] + "…"
    )

    await sender.send(make_msg(title="Grüße", tenants=()))
    short = mx.received[1]
    expected = "8bit" if offer_8bitmime else "quoted-printable"
    assert short.message["Content-Transfer-Encoding"] == expected
    assert ("BODY=8BITMIME" in short.mail_options) is offer_8bitmime
    assert short.message["Subject"] == "[P0] INC-20240501-0001 opened: Grüße"


async def test_the_strict_server_refuses_unannounced_8bit_data(
    smtp_server: Callable[..., int],
) -> None:
    port = smtp_server(StrictSmtp())
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await smtp.sendmail(
                "a@x.example", ["b@y.example"], "Subject: x\r\n\r\nGrüße\r\n".encode()
            )
    assert info.value.code == 554


async def test_an_address_that_needs_smtputf8(smtp_server: Callable[..., int]) -> None:
    plain = StrictSmtp()
    sender = EmailSender(
        "127.0.0.1",
        smtp_server(plain),
        sender=FROM,
        recipients=["jörg@ops.example", "ops@exämple.example"],
        tls="none",
    )
    attempt = await sender.send_to(
        make_msg(tenants=()), sender.operators, message_key="k1", thread_key=None
    )
    states = {a: (r.state, r.reply) for a, r in attempt.outcomes.items()}
    assert states["jörg@ops.example"] == ("refused", "needs SMTPUTF8, which the server lacks")
    assert states["ops@exämple.example"][0] == "accepted"  # the domain goes as IDNA
    assert plain.received[0].rcpt_tos == ["ops@xn--exmple-cua.example"]

    utf8 = StrictSmtp(offer_smtputf8=True)
    sender = EmailSender(
        "127.0.0.1",
        smtp_server(utf8),
        sender=FROM,
        recipients=["jörg@ops.example"],
        tls="none",
    )
    await sender.send(make_msg(tenants=(), title="Grüße"))
    (got,) = utf8.received
    assert "SMTPUTF8" in got.mail_options and got.rcpt_tos == ["jörg@ops.example"]


# --- e-mail: implicit TLS, certificate failures --------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl; `cryptography` is not installed)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_server(smtp_server: Callable[..., int], cert: Path, key: Path) -> tuple[StrictSmtp, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mx = StrictSmtp()
    return mx, smtp_server(mx, ssl_context=context)


async def test_implicit_tls_delivers_with_a_trusted_certificate(
    smtp_server: Callable[..., int], certificate: tuple[Path, Path]
) -> None:
    mx, port = tls_server(smtp_server, *certificate)
    sender = EmailSender(
        "127.0.0.1",
        port,
        sender=FROM,
        recipients=OPERATORS,
        tls="implicit",
        ca_file=str(certificate[0]),
    )
    assert await sender.send(make_msg(tenants=())) == "2.0.0 Ok: queued"
    assert len(mx.received) == 1


async def test_an_untrusted_certificate_is_a_configuration_error(
    smtp_server: Callable[..., int], certificate: tuple[Path, Path]
) -> None:
    mx, port = tls_server(smtp_server, *certificate)
    sender = EmailSender("127.0.0.1", port, sender=FROM, recipients=OPERATORS, tls="implicit")
    with pytest.raises(DeliveryError) as info:
        await sender.send(make_msg(tenants=()))
    err = info.value
    assert err.config_error is True and err.retryable is False
    assert "certificate verification failed" in str(err)
    assert "RECEIVER_SMTP_TLS=implicit" in str(err)
    assert mx.received == []


async def test_a_certificate_failure_is_audited_not_retried_and_shown_in_readyz(
    app_client: Callable[..., Any],
    smtp_server: Callable[..., int],
    certificate: tuple[Path, Path],
    sql: Rows,
) -> None:
    from tests.conftest import API_HEADERS
    from tests.integration.test_notifications import open_incident

    _, port = tls_server(smtp_server, *certificate)
    client = await app_client(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="implicit",
        email_from=FROM,
        email_to=", ".join(OPERATORS),
        outbox_poll_seconds=0.05,
        notify_backoff_base_seconds=0.05,
    )
    incident_id = await open_incident(client, "initech", "bronze")  # P2: Slack and e-mail
    await wait_for(lambda: sql("SELECT status FROM notifications") == [("failed",)])
    ((details,),) = sql(
        "SELECT details FROM audit_log WHERE action = 'notification.failed' AND incident_id = %s",
        incident_id,
    )
    assert details["configuration_error"] is True and details["will_retry"] is False
    assert "certificate verification failed" in details["error"]
    assert sql("SELECT attempts FROM notifications") == [(1,)]

    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready"  # informational only
    health = body["notification_health"]["email"]
    assert health.startswith("configuration error since ")
    assert "certificate verification failed" in health
    assert API_HEADERS  # (the incident was opened with the API token)


# --- PagerDuty and Slack: limits -------------------------------------------------------------


async def test_the_strict_pagerduty_refuses_what_the_real_one_does(
    http: aiohttp.ClientSession, pagerduty: tuple[StrictPagerDuty, str]
) -> None:
    fake, url = pagerduty
    good = render_event(incident(3), routing_key=ROUTING_KEY)
    for broken in (
        {**good, "payload": {**good["payload"], "summary": "x" * 1025}},
        {**good, "payload": {**good["payload"], "severity": "fatal"}},
        {**good, "payload": {**good["payload"], "custom_details": {"pad": "x" * 600_000}}},
    ):
        async with http.post(url, json=broken) as resp:
            assert resp.status == 400
    assert [m for _, m in fake.refusals][-1] == "Request body exceeds 512 KB"
    sender = PagerDutySender(http, ROUTING_KEY, events_url=url)
    await sender.send(incident(3, title="y" * 5000, note="z" * 100_000))
    (event,) = fake.events
    assert len(event["payload"]["summary"]) == 1024
    assert len(event["payload"]["custom_details"]["note"]) == 2000
    for priority, severity in ((Priority.P0, "critical"), (Priority.P1, "error")):
        body = render_event(make_msg(priority=priority), routing_key=ROUTING_KEY)
        assert body["payload"]["severity"] == severity


def test_slack_clips_never_cut_an_entity_or_a_link() -> None:
    text = "a" * 10 + "&amp;" + "b" * 10 + "<https://x.example/|label>" + "c" * 10
    for limit in range(1, len(text) + 1):
        out = clip(text, limit)
        assert len(out) <= limit
        core = out.removesuffix("…")
        assert core.count("<") == core.count(">")
        assert not re.search(r"&[a-z]*$", core)
        assert text.startswith(core)
    assert clip(text, len(text)) == text


async def test_slack_within_block_kit_limits_whatever_the_text(
    http: aiohttp.ClientSession, slack: tuple[StrictSlack, str]
) -> None:
    fake, url = slack
    msg = incident(
        5000,
        title="<&>" * 2000,
        note="& <b> " * 2000,
        runbook_urls=tuple(f"https://r.example/{i}?a=1&b=2" for i in range(300)),
    )
    payload = render_payload(msg)
    assert len(payload["blocks"]) <= 50
    await SlackSender(http, url).send(msg)
    assert fake.answers == [(200, "ok")]


async def test_slack_is_paced_and_a_429_waits_for_its_retry_after(
    sessions: Any, sql: Rows, http: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    fake = StrictSlack(rate=4, burst=4, retry_after=1)
    server = await aiohttp_server(fake.app())
    sender = SlackSender(http, str(server.make_url("/services/T0/B0/hook")))
    w = OutboxWorker(
        sessions=sessions,
        senders={Channel.SLACK: sender},
        policy=RetryPolicy(base_seconds=0.05, max_seconds=0.2),
        pacer=Pacer({Channel.SLACK: 3.5}),  # a little under the webhook's 4 a second
    )
    for i in range(6):
        await enqueue(sessions, make_msg(incident_id=f"INC-20240501-{i:04d}"), {Channel.SLACK})
    await drain_paced(w, sql)
    assert [s for s, _ in fake.answers] == [200] * 6  # paced: never a 429
    gaps = [b - a for a, b in zip(fake.arrivals, fake.arrivals[1:], strict=False)]
    assert min(gaps[3:]) > 0.2  # after the first second's burst, paced at 3.5 a second

    fake.forced_429s = 1
    await enqueue(sessions, make_msg(incident_id="INC-20240501-0099"), {Channel.SLACK})
    await drain_paced(w, sql)
    assert [s for s, _ in fake.answers[-2:]] == [429, 200]
    assert fake.arrivals[-1] - fake.arrivals[-2] >= 1.0  # Retry-After: 1, honoured
    throttled = sql(
        "SELECT details FROM audit_log WHERE action = 'notification.failed' "
        "AND incident_id = 'INC-20240501-0099'"
    )
    assert [(d["throttled"], d["will_retry"]) for (d,) in throttled] == [(True, True)]
    assert sql("SELECT throttled FROM notifications WHERE incident_id = 'INC-20240501-0099'") == [
        (1,)
    ]


async def drain_paced(w: OutboxWorker, sql: Rows) -> None:
    import asyncio

    for _ in range(400):
        if not await w.run_once():
            await asyncio.sleep(0.02)
        if sql("SELECT count(*) FROM notifications WHERE status = 'pending'") == [(0,)]:
            return
    raise AssertionError("outbox not drained in time")
