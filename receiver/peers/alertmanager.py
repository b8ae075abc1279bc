"""One Alertmanager peer's `GET /api/v2/alerts` as the domain's `PeerAnswer`.

    answers = await poll_peers(session, ["http://am-0:9093", "http://am-1:9093"])
    result = reconcile(stored, answers, previous_absent, tenant_label=...)

Asks for every alert the peer holds: active, silenced, inhibited and unprocessed (a
silence stops pages, not isolation). Anything but a complete, valid answer within the
timeout (connection error, timeout, non-2xx, a body that is not the API's list of
alerts, a body over the size limit) is a `PeerFailed` carrying the reason, and a poll
with a failed peer changes nothing: a partial answer could make a firing alert look
absent, so a single malformed alert fails the whole answer.

The session is the caller's (one per process, closed by its owner); nothing here
retries: the next poll is the retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import aiohttp
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from yarl import URL

from receiver.domain.reconcile import PeerAlert, PeerAnswer, PeerFailed, PeerOk

ALERTS_PATH = "/api/v2/alerts"
# Every filter of the endpoint on: its defaults already include all four, but a proxy or
# a future default must not hide silenced or inhibited alerts.
ALERTS_QUERY = {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}
DEFAULT_TIMEOUT_SECONDS = 5.0
# About 1 KB per alert: room for tens of thousands of alerts, and a bound on memory.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_CHUNK = 64 * 1024
_GO_ZERO_YEAR = 1


class _Wire(BaseModel):
    # Newer Alertmanagers add fields: ignore them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Status(_Wire):
    state: str
    silencedBy: list[str] = Field(default_factory=list)
    inhibitedBy: list[str] = Field(default_factory=list)


class _Receiver(_Wire):
    name: str


class _GettableAlert(_Wire):
    """API v2 `gettableAlert` (Alertmanager 0.25: fingerprint, startsAt, endsAt,
    updatedAt, labels, annotations, status, receivers, generatorURL)."""

    fingerprint: str = Field(pattern=r"^[0-9a-f]{1,16}$")
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    updatedAt: AwareDatetime | None = None
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    status: _Status
    receivers: list[_Receiver] = Field(default_factory=list)
    generatorURL: str = ""


_ALERTS = TypeAdapter(list[_GettableAlert])


class _TooLarge(Exception):
    pass


def peer_name(base_url: str) -> str:
    """The peer as logs, metrics and reasons name it: its URL without credentials."""
    url = URL(base_url)
    return str(url.with_user(None)) if url.user or url.password else base_url


async def fetch_alerts(
    session: aiohttp.ClientSession,
    base_url: str,
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    headers: Mapping[str, str] | None = None,
) -> PeerAnswer:
    """Every alert one peer holds, or why not. Never raises for the peer's faults."""
    peer = peer_name(base_url)
    url = base_url.rstrip("/") + ALERTS_PATH
    try:
        async with session.get(
            url,
            params=ALERTS_QUERY,
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            allow_redirects=False,
        ) as response:
            if not 200 <= response.status < 300:
                return PeerFailed(peer, f"HTTP {response.status} from {ALERTS_PATH}")
            body = await _read_bounded(response, max_body_bytes)
    except TimeoutError:
        return PeerFailed(peer, f"no answer within {timeout_seconds:g}s")
    except _TooLarge:
        return PeerFailed(peer, f"answer over {max_body_bytes} bytes")
    except aiohttp.ClientError as exc:
        return PeerFailed(peer, f"{type(exc).__name__}: {exc}")
    try:
        alerts = _ALERTS.validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return PeerFailed(peer, f"invalid answer: {where}: {first['msg']}")
    return PeerOk(peer, tuple(_to_domain(a) for a in alerts))


async def poll_peers(
    session: aiohttp.ClientSession,
    base_urls: Iterable[str],
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    headers: Mapping[str, str] | None = None,
) -> list[PeerAnswer]:
    """Every peer at once, answers in the order of `base_urls`; one slow peer costs at
    most `timeout_seconds`, not the sum."""
    return list(
        await asyncio.gather(
            *(
                fetch_alerts(
                    session,
                    u,
                    timeout_seconds=timeout_seconds,
                    max_body_bytes=max_body_bytes,
                    headers=headers,
                )
                for u in base_urls
            )
        )
    )


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _to_domain(alert: _GettableAlert) -> PeerAlert:
    ends_at = alert.endsAt
    return PeerAlert(
        # Zero-padded as the webhook path pads it: one spelling per fingerprint.
        fingerprint=alert.fingerprint.zfill(16),
        starts_at=alert.startsAt,
        labels=_without_nul(alert.labels),
        annotations=_without_nul(alert.annotations),
        ends_at=None if ends_at is None or ends_at.year == _GO_ZERO_YEAR else ends_at,
        updated_at=alert.updatedAt,
        generator_url=alert.generatorURL.replace("\x00", ""),
        state=alert.status.state,
        silenced_by=tuple(alert.status.silencedBy),
        inhibited_by=tuple(alert.status.inhibitedBy),
        receivers=tuple(r.name for r in alert.receivers),
    )


def _without_nul(values: Mapping[str, str]) -> dict[str, str]:
    # As the webhook path does: PostgreSQL text and jsonb cannot hold U+0000, so the
    # character is dropped (the fingerprint is Alertmanager's, computed before).
    return {k.replace("\x00", ""): v.replace("\x00", "") for k, v in values.items()}
