"""Server-rendered SVG charts for the analytics page: no front-end build, no script.

Each chart is an <svg role="img"> with a <title> and a <desc>, sized by its viewBox (the
stylesheet makes it as wide as its card); colours come from CSS classes, so light and
dark mode both read. Every value is escaped."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from markupsafe import Markup, escape

from receiver.ui.present import duration

W, H = 480, 260  # a half-width card; the wide one draws WIDE units across
WIDE = 1200
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 16, 40
_NICE = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200)


def _step(top: float, ticks: int = 4) -> float:
    """A round tick step so that `ticks` steps cover `top`."""
    raw = max(top, 1e-9) / ticks
    for n in _NICE:
        if n >= raw:
            return float(n)
    return float(86400 * max(1, round(raw / 86400 + 0.5)))


def _svg(title: str, desc: str, body: list[str], *, height: int = H, width: int = W) -> Markup:
    ident = "chart-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}" preserveAspectRatio="xMidYMid meet">'
        f'<title id="{ident}">{escape(title)}</title><desc>{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _y_axis(
    top: float, fmt: Callable[[float], str], *, height: int = H, width: int = W
) -> tuple[float, list[str]]:
    step = _step(top)
    ymax = step * max(1, -(-top // step)) if top > 0 else step * 4
    plot = height - TOP - BOTTOM
    out = []
    v = 0.0
    while v <= ymax + 1e-9:
        y = TOP + plot - plot * v / ymax
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="tick" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(v))}</text>"
        )
        v += step
    return ymax, out


@dataclass(frozen=True)
class Series:
    label: str
    css: str  # a class of the stylesheet: series-1, series-2, ...
    values: dict[date, float | None]


def line_chart(title: str, series: Sequence[Series], *, start: date, end: date) -> Markup:
    """Seconds per day from `start` to `end` (inclusive); a day without a value is a gap."""
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    values = [v for s in series for v in s.values.values() if v is not None]
    if not values:
        return _empty(title, "no incidents were acknowledged or resolved in this period", WIDE)
    ymax, body = _y_axis(max(values), duration, width=WIDE)
    plot_w, plot_h = WIDE - LEFT - RIGHT, H - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / max(1, len(days) - 1))

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / ymax

    for i, d in enumerate(days):
        if i % max(1, len(days) // 10) == 0:
            anchor = "end" if i == len(days) - 1 else "start" if i == 0 else "middle"
            body.append(
                f'<text class="tick" x="{x(i):.1f}" y="{H - BOTTOM + 18}" '
                f'text-anchor="{anchor}">{d:%b %d}</text>'
            )
    for s in series:
        run: list[str] = []
        for i, d in enumerate(days):
            v = s.values.get(d)
            if v is None:
                body.append(_polyline(s.css, run))
                run = []
                continue
            run.append(f"{x(i):.1f},{y(v):.1f}")
            body.append(
                f'<circle class="{s.css}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5">'
                f"<title>{escape(s.label)} {d:%Y-%m-%d}: {escape(duration(v))}</title></circle>"
            )
        body.append(_polyline(s.css, run))
    desc = "; ".join(
        f"{s.label}: "
        + ", ".join(f"{d:%Y-%m-%d} {duration(v)}" for d, v in sorted(s.values.items()) if v)
        for s in series
    )
    return _svg(title, desc, body, width=WIDE)


def _polyline(css: str, points: list[str]) -> str:
    return f'<polyline class="{css}" points="{" ".join(points)}"/>' if len(points) > 1 else ""


def bar_chart(
    title: str, bars: Sequence[tuple[str, float, str]], *, unit: str = "incidents"
) -> Markup:
    """Vertical bars: (label, value, css class)."""
    if not bars or not any(v for _, v, _ in bars):
        return _empty(title, f"no {unit} in this period")
    ymax, body = _y_axis(max(v for _, v, _ in bars), lambda v: f"{v:g}")
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / len(bars)
    for i, (label, value, css) in enumerate(bars):
        h = plot_h * value / ymax
        x0 = LEFT + slot * i + slot * 0.2
        body.append(
            f'<rect class="{css}" x="{x0:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{slot * 0.6:.1f}" height="{h:.1f}" rx="3">'
            f"<title>{escape(label)}: {value:g} {unit}</title></rect>"
        )
        cx = x0 + slot * 0.3
        body.append(
            f'<text class="tick" x="{cx:.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
        body.append(
            f'<text class="value" x="{cx:.1f}" y="{TOP + plot_h - h - 6:.1f}" '
            f'text-anchor="middle">{value:g}</text>'
        )
    desc = ", ".join(f"{label}: {value:g}" for label, value, _ in bars)
    return _svg(title, desc, body)


def hbar_chart(title: str, bars: Sequence[tuple[str, float]], *, unit: str = "trips") -> Markup:
    """Horizontal bars, most first (at most 12)."""
    bars = sorted(bars, key=lambda b: (-b[1], b[0]))[:12]
    if not bars:
        return _empty(title, f"no {unit} in this period")
    row, left = 26, 140
    height = TOP + row * len(bars) + 12
    top = max(v for _, v in bars)
    body = []
    for i, (label, value) in enumerate(bars):
        y = TOP + row * i
        width = (W - left - 56) * value / top
        short = label if len(label) <= 18 else label[:17] + "…"
        body.append(
            f'<text class="tick" x="{left - 8}" y="{y + 15}" text-anchor="end">'
            f"{escape(short)}</text>"
            f'<rect class="series-1" x="{left}" y="{y + 3}" width="{width:.1f}" height="16" rx="3">'
            f"<title>{escape(label)}: {value:g} {unit}</title></rect>"
            f'<text class="value" x="{left + width + 6:.1f}" y="{y + 15}">{value:g}</text>'
        )
    desc = ", ".join(f"{label}: {value:g}" for label, value in bars)
    return _svg(title, desc, body, height=height)


def _empty(title: str, message: str, width: int = W) -> Markup:
    return _svg(
        title,
        message,
        [
            f'<text class="empty" x="{width / 2}" y="{H / 4 + 10}" text-anchor="middle">'
            f"{escape(message)}</text>"
        ],
        height=H // 2 + 20,
        width=width,
    )
