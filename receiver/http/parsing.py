"""Request parsing shared by the handlers: body limits, content type, pydantic models."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from receiver.db import json
from receiver.errors import InvalidInput, ReceiverError
from receiver.http.schemas import MAY_HOLD_NUL, TenantId

M = TypeVar("M", bound=BaseModel)

_TENANT_ID: TypeAdapter[str] = TypeAdapter(TenantId)


class HttpError(ReceiverError):
    """An error only the HTTP layer can raise, with its own status code."""

    status = 400


class UnsupportedMediaType(HttpError):
    status = 415
    error = "unsupported_media_type"


class PayloadTooLarge(HttpError):
    status = 413
    error = "payload_too_large"


class InvalidPayload(HttpError):
    """A body that parses as JSON but does not match the model: 422 with pydantic's
    location of each problem."""

    status = 422
    error = "invalid_payload"

    def __init__(self, detail: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.problems = problems


dumps = json.dumps


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps_bytes(data), status=status, content_type="application/json")


async def read_json_body(request: web.Request, *, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(
            f"body of {request.content_length} bytes is over the limit of {max_bytes} bytes "
            "(RECEIVER_MAX_BODY_BYTES)"
        )
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {request.content_type or 'none'!r}"
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"body is over the limit of {max_bytes} bytes (RECEIVER_MAX_BODY_BYTES)"
        ) from exc
    if not body.strip():
        raise InvalidInput("the body is empty; a JSON object is expected")
    return body


def parse_model(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body, context={MAY_HOLD_NUL: b"\\u0000" in body})
    except ValidationError as exc:
        raise validation_error(exc) from exc


def validation_error(exc: ValidationError) -> ReceiverError:
    problems = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(p["type"] == "json_invalid" for p in problems):
        return InvalidInput(f"the body is not valid JSON: {problems[0]['msg']}")
    described = "; ".join(
        f"{'.'.join(str(part) for part in p['loc']) or 'body'}: {p['msg']}" for p in problems[:10]
    )
    return InvalidPayload(described, [{"loc": list(p["loc"]), "msg": p["msg"]} for p in problems])


async def read_model(request: web.Request, model: type[M], *, max_bytes: int = 1 << 20) -> M:
    return parse_model(model, await read_json_body(request, max_bytes=max_bytes))


# The tenant path segment, empty included: aiohttp's default `{tenant_id}` needs at least one
# character, so `/v1/tenants//breaker` would be a bare 404 instead of tenant_id_from's 400.
# aiohttp matches on the path with %2F still encoded, so a tenant id with a slash
# (`/v1/tenants/team%2Fa/breaker`) is one segment.
TENANT = "{tenant_id:[^{}/]*}"
_TENANT_SEGMENT = 3  # "", "v1", "tenants", the id


def tenant_id_from(request: web.Request) -> str:
    """The tenant id of a /v1/tenants/{id}... path: the segment percent-decoded as UTF-8
    (`Acme%20Corp` is "Acme Corp"), any value the webhook takes as a tenant."""
    raw = request.raw_path.partition("?")[0].split("/")[_TENANT_SEGMENT]
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"invalid tenant id {raw[:80]!r}: not percent-encoded UTF-8") from exc
    try:
        return _TENANT_ID.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput(
            f"invalid tenant id {raw[:80]!r}: 1 to 512 bytes of UTF-8 without control "
            "characters, percent-encoded in the path (/v1/tenants/Acme%20Corp/breaker)"
        ) from exc
