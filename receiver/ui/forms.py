"""The console's forms and filters, read into the API's own models where there is one, so
that a form is held to the same rules as the JSON body (lengths, NUL, action items)."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from receiver.errors import InvalidInput
from receiver.http.parsing import validation_error
from receiver.http.schemas import (
    Actor,
    IncidentActionIn,
    IncidentQuery,
    OverrideIn,
    PostmortemIn,
)
from receiver.ui.auth import operator_name

M = TypeVar("M", bound=BaseModel)
FORM_ONLY = ("csrf",)  # fields every form has that no model takes


def _validate(model: type[M], values: dict[str, Any]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from exc


async def _fields(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: str(v) for k, v in form.items() if k not in FORM_ONLY and isinstance(v, str)}


def _filled(values: Any) -> dict[str, str]:
    """A GET form sends its empty selects as `name=`: those mean "any"."""
    return {k: v for k, v in values.items() if v != ""}


# --- filters ------------------------------------------------------------------------------


class BoardFilter(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: Literal["closed", "open", "half_open", "forced_open", "forced_closed"] | None = None
    tier: Literal["platinum", "gold", "silver", "bronze", "unregistered"] | None = None


def board_filter(request: web.Request) -> BoardFilter:
    return _validate(BoardFilter, _filled(request.query))


def incident_filter(request: web.Request) -> IncidentQuery:
    values = {k: v for k, v in _filled(request.query).items() if k in IncidentQuery.model_fields}
    return _validate(IncidentQuery, values)


# --- forms --------------------------------------------------------------------------------


async def override_form(request: web.Request) -> OverrideIn:
    fields = await _fields(request)
    return _validate(OverrideIn, {**fields, "actor": operator_name(request)})


OVERRIDE_ACTIONS = ("force_open", "force_close", "release")


def override_choice(request: web.Request) -> str:
    """The action the confirmation page asks about (the reason is typed there)."""
    action = request.query.get("action", "")
    if action not in OVERRIDE_ACTIONS:
        raise InvalidInput(f"choose one of {', '.join(OVERRIDE_ACTIONS)}, not {action[:40]!r}")
    return action


async def incident_action_form(request: web.Request) -> IncidentActionIn:
    fields = await _fields(request)
    return _validate(
        IncidentActionIn, {"note": fields.get("note") or None, "actor": operator_name(request)}
    )


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def action_items(text: str | None) -> list[dict[str, str]]:
    """One item a line: `description | owner team | YYYY-MM-DD [| status]`."""
    items = []
    for n, line in enumerate(_lines(text), start=1):
        parts = [p.strip() for p in line.split("|")]
        if len(parts) not in (3, 4):
            raise InvalidInput(
                f"action item {n}: write `description | owner team | YYYY-MM-DD` "
                f"(and optionally `| status`), got {line[:80]!r}"
            )
        item = dict(zip(("description", "owner_team", "due"), parts[:3], strict=True))
        if len(parts) == 4 and parts[3]:
            item["status"] = parts[3]
        items.append(item)
    return items


def action_items_text(items: Any) -> str:
    return "\n".join(f"{a.description} | {a.owner_team} | {a.due} | {a.status}" for a in items)


async def postmortem_form(request: web.Request) -> PostmortemIn:
    f = await _fields(request)
    return _validate(
        PostmortemIn,
        {
            "actor": operator_name(request),
            "root_cause": f.get("root_cause") or None,
            "five_whys": _lines(f.get("five_whys")),
            "what_went_well": _lines(f.get("what_went_well")),
            "action_items": action_items(f.get("action_items")),
            "false_positive": f.get("false_positive") == "on",
        },
    )


class LoginForm(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    token: str = ""
    name: Actor | None = None
    csrf: str = ""
    next: str = "/ui/"


async def login_form(request: web.Request) -> LoginForm:
    form = await request.post()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    if not values.get("name", "").strip():
        values.pop("name", None)
    return _validate(LoginForm, values)


def local_next(path: str | None) -> str:
    """Where to go after login: a path of the console, never another site."""
    if not path or not path.startswith("/ui/") or path.startswith("//") or "\\" in path:
        return "/ui/"
    return path
