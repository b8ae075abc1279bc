"""What every notification sender promises, and how it fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import aiohttp

from receiver.domain.notification import Channel, IncidentMessage
from receiver.domain.recipients import Recipient

#: How much of a provider's answer goes into an error message.
EXCERPT_CHARS = 300


class DeliveryError(Exception):
    """A notification was not delivered.

    `retryable` tells the outbox worker whether the same message may succeed later
    (HTTP 5xx, 429, timeouts, connection errors, SMTP 4xx) or never will (HTTP 4xx other
    than 408/429, SMTP 5xx, bad configuration). `status` is the HTTP status or SMTP reply
    code when there was one; `retry_after` is the provider's requested delay in seconds
    (HTTP Retry-After), if it gave one. The message never contains secrets (webhook
    URLs, routing keys, passwords). `config_error` marks what only the operator can fix
    (a certificate that does not verify, credentials refused): never retried, logged as
    an error and shown in /readyz.
    """

    def __init__(
        self,
        channel: Channel,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        config_error: bool = False,
    ) -> None:
        self.channel = channel
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.config_error = config_error
        super().__init__(self._render())

    def _render(self) -> str:
        kind = "retryable" if self.retryable else "permanent"
        if self.config_error:
            kind = "configuration error"
        parts = [f"{self.channel} delivery failed ({kind}"]
        if self.retry_after is not None:
            parts.append(f", retry after {self.retry_after:g}s")
        parts.append(f"): {self.reason}")
        if self.detail:
            parts.append(f": {self.detail}")
        return "".join(parts)

    def __reduce__(self) -> tuple[object, ...]:  # keep pickling (and copying) working
        return (
            _rebuild_delivery_error,
            (
                self.channel,
                self.reason,
                self.retryable,
                self.status,
                self.detail,
                self.retry_after,
                self.config_error,
            ),
        )


def _rebuild_delivery_error(
    channel: Channel,
    reason: str,
    retryable: bool,
    status: int | None,
    detail: str | None,
    retry_after: float | None,
    config_error: bool = False,
) -> DeliveryError:
    return DeliveryError(
        channel,
        reason,
        retryable=retryable,
        status=status,
        detail=detail,
        retry_after=retry_after,
        config_error=config_error,
    )


@runtime_checkable
class Sender(Protocol):
    """Delivers one message on one channel.

    `send` returns a short provider reference (PagerDuty's dedup_key, Slack's 'ok', the
    SMTP server's answer) and raises `DeliveryError` on any failure. It does not retry:
    the outbox worker decides, from `DeliveryError.retryable`.
    """

    channel: Channel

    async def send(self, msg: IncidentMessage) -> str: ...


@dataclass(frozen=True)
class RecipientsAttempt:
    """What one attempt to deliver an e-mail to some recipients came to.

    `outcomes` has an entry for every recipient the server answered for (accepted,
    refused for good, or refused for now: pending); the others were not reached. `error`
    is what cut the attempt short (a dropped connection, a refused DATA), if anything."""

    outcomes: Mapping[str, Recipient]
    reference: str = ""
    error: DeliveryError | None = None


@runtime_checkable
class RecipientSender(Protocol):
    """A sender that reports on each recipient (e-mail): the outbox keeps their states."""

    channel: Channel

    async def send_to(
        self,
        msg: IncidentMessage,
        recipients: Sequence[str],
        *,
        message_key: str,
        thread_key: str | None,
    ) -> RecipientsAttempt: ...


# --- helpers shared by the HTTP senders -----------------------------------------------


def excerpt(text: str, *, secrets: Iterable[str] = (), limit: int = EXCERPT_CHARS) -> str:
    """A one-line, bounded, secret-free piece of a provider's answer."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def is_retryable_http_status(status: int) -> bool:
    """5xx, 429 Too Many Requests and 408 Request Timeout are worth another try."""
    return status >= 500 or status in (408, 429)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def transport_error(channel: Channel, exc: BaseException, *, timeout: float) -> DeliveryError:
    """Classify an exception raised while talking HTTP to a provider."""
    if isinstance(exc, aiohttp.InvalidURL):
        # The URL is configuration and may be a secret (Slack's webhook): don't echo it.
        return DeliveryError(channel, "invalid endpoint URL", retryable=False)
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11
        return DeliveryError(channel, f"timed out after {timeout:g}s", retryable=True)
    name = type(exc).__name__
    text = str(exc)
    reason = f"{name}: {text}" if text else name
    return DeliveryError(channel, f"connection failed: {excerpt(reason)}", retryable=True)


def unrenderable(channel: Channel, exc: Exception) -> DeliveryError:
    """The message itself cannot be expressed on this channel: retrying will not help."""
    return DeliveryError(
        channel, "cannot render the message", retryable=False, detail=excerpt(str(exc))
    )


async def read_excerpt(resp: aiohttp.ClientResponse, *, secrets: Iterable[str] = ()) -> str:
    """The start of a response body, decoded leniently, without reading all of it."""
    try:
        raw = await resp.content.read(4 * EXCERPT_CHARS)
    except (aiohttp.ClientError, TimeoutError):
        return ""
    return excerpt(raw.decode("utf-8", errors="replace"), secrets=secrets)


async def post_json(
    session: aiohttp.ClientSession,
    channel: Channel,
    url: str,
    body: Any,
    *,
    what: str,
    time_limit: float,
    secrets: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    accepted: Callable[[aiohttp.ClientResponse], Awaitable[str]],
) -> str:
    """POST `body` as JSON (no redirects) and return `accepted(response)` for a 2xx.

    Any other status raises a DeliveryError naming it and `what` was sent, with an
    excerpt of the answer, retryable as `is_retryable_http_status` says and then with
    the provider's Retry-After; a timeout (after `time_limit` seconds in all) or a
    connection error raises `transport_error`'s. `secrets` are masked in every excerpt."""
    secrets = tuple(secrets)
    try:
        async with session.post(
            url,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=time_limit),
            allow_redirects=False,
        ) as resp:
            if 200 <= resp.status < 300:
                return await accepted(resp)
            detail = await read_excerpt(resp, secrets=secrets)
            retryable = is_retryable_http_status(resp.status)
            raise DeliveryError(
                channel,
                f"HTTP {resp.status} for {what}",
                retryable=retryable,
                status=resp.status,
                detail=detail,
                retry_after=parse_retry_after(resp.headers.get("Retry-After"))
                if retryable
                else None,
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise transport_error(channel, exc, timeout=time_limit) from exc
