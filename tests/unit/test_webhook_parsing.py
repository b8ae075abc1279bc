"""The webhook body's parsing shortcuts (receiver/http/parsing.py, schemas.py) give the
answers of the full checks: U+0000 is dropped wherever JSON escapes it, and timestamps
that cannot be converted to UTC are refused, with the cheap paths skipping neither."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.alerts import tenant_id_problem
from receiver.http.parsing import InvalidPayload, parse_model
from receiver.http.schemas import WebhookPayload


def body(**alert: Any) -> bytes:
    a = {
        "status": "firing",
        "labels": {"alertname": "A", "tenant_id": "t"},
        "startsAt": "2026-12-03T08:00:00Z",
        **alert,
    }
    return json.dumps({"version": "4", "status": "firing", "alerts": [a]}).encode()


def test_nul_is_dropped_from_keys_and_values() -> None:
    payload = parse_model(WebhookPayload, body(labels={"alert\x00name": "A\x00", "tenant_id": "t"}))
    assert payload.alerts[0].labels == {"alertname": "A", "tenant_id": "t"}


def test_an_escaped_backslash_before_u0000_is_text_and_kept() -> None:
    raw = body(annotations={"summary": "\\u0000 is how JSON writes NUL"})
    assert b"\\\\u0000" in raw
    payload = parse_model(WebhookPayload, raw)
    assert payload.alerts[0].annotations["summary"] == "\\u0000 is how JSON writes NUL"


def test_a_body_without_nul_is_taken_as_is() -> None:
    payload = parse_model(WebhookPayload, body(annotations={"summary": "plain"}))
    assert payload.alerts[0].annotations == {"summary": "plain"}


def test_model_validate_without_context_still_drops_nul() -> None:
    payload = WebhookPayload.model_validate_json(body(labels={"a": "\x00"}))
    assert payload.alerts[0].labels == {"a": ""}


@pytest.mark.parametrize("starts_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_timestamps_outside_utc_years_are_refused(starts_at: str) -> None:
    with pytest.raises(InvalidPayload, match="out of range once converted to UTC"):
        parse_model(WebhookPayload, body(startsAt=starts_at))


@pytest.mark.parametrize(
    "starts_at",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-02T00:00:00+14:00",
        "9999-12-31T00:00:00-14:00",
        "2026-12-03T08:00:00+05:30",
    ],
)
def test_timestamps_inside_utc_years_are_taken(starts_at: str) -> None:
    assert parse_model(WebhookPayload, body(startsAt=starts_at)).alerts[0].startsAt


@given(st.text())
def test_a_control_character_is_found_wherever_it_is(value: str) -> None:
    """The regex finds exactly the C0, DEL and C1 characters a per-character test finds."""
    expected = any(c < " " or "\x7f" <= c <= "\x9f" for c in value)
    problem = tenant_id_problem(value)
    if expected and value:
        assert problem is not None
    if problem == "contains a control character":
        assert expected


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\x85", "\x9f"])
def test_control_characters_make_an_unusable_tenant_id(char: str) -> None:
    assert tenant_id_problem(f"team{char}a") == "contains a control character"


@pytest.mark.parametrize("value", ["team-a", "équipe", "\xa0nbsp", "~"])
def test_printable_tenant_ids_are_usable(value: str) -> None:
    assert tenant_id_problem(value) is None
