"""Query strings read into pydantic models (GET filters)."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from receiver.http.parsing import validation_error

Q = TypeVar("Q", bound=BaseModel)


def parse_query(request: web.Request, model: type[Q]) -> Q:
    # A '+' of a UTC offset arrives as a space when the client did not encode it.
    values = {
        k: v.replace(" ", "+") if k in ("since", "until") else v for k, v in request.query.items()
    }
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from exc
