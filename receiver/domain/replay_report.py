"""How a what-if comparison is shown: a table (baseline, proposed, delta), a timeline
chart in text, and an HTML report with an inline SVG timeline (one row per tenant,
isolation as bars, baseline beside proposed). Pure: strings in, strings out."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime

from receiver.domain.replay_figures import Figures, Span, TenantFigures
from receiver.domain.tiers import Priority

MAX_ROWS = 40  # tenants shown in the charts; the busiest first
_BASE_COLOUR = "#3b6fb6"
_PROPOSED_COLOUR = "#e07b24"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _signed(value: float) -> str:
    return "0" if value == 0 else ("+" if value > 0 else "-") + _number(abs(value))


def summary_rows(baseline: Figures, proposed: Figures) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = [
        ("trips", baseline.trips, proposed.trips),
        ("suppressed", baseline.suppressed, proposed.suppressed),
        ("isolated seconds", baseline.isolated_seconds, proposed.isolated_seconds),
        ("incidents", baseline.incidents, proposed.incidents),
    ]
    rows += [
        (f"  {p.value}", baseline.by_priority[p.value], proposed.by_priority[p.value])
        for p in Priority
    ]
    return rows


def busiest(baseline: Figures, proposed: Figures, limit: int = MAX_ROWS) -> list[str]:
    """Tenants with anything to show, most isolated (in either run) first."""
    tenants = set(baseline.per_tenant) | set(proposed.per_tenant)

    def weight(t: str) -> tuple[float, str]:
        b, p = baseline.per_tenant.get(t), proposed.per_tenant.get(t)
        seconds = max(b.isolated_seconds if b else 0.0, p.isolated_seconds if p else 0.0)
        return (-seconds, t)

    return sorted(tenants, key=weight)[:limit]


def text_table(
    baseline: Figures, proposed: Figures, *, changes: Mapping[str, tuple[object, object]]
) -> str:
    lines = []
    if changes:
        lines.append("proposed: " + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in changes.items()))
    else:
        lines.append("proposed: no change (--set NAME=VALUE to propose one)")
    lines.append("")
    lines.append(f"{'':<20}{'baseline':>14}{'proposed':>14}{'delta':>12}")
    for label, b, p in summary_rows(baseline, proposed):
        lines.append(f"{label:<20}{_number(b):>14}{_number(p):>14}{_signed(p - b):>12}")
    tenants = busiest(baseline, proposed)
    if tenants:
        lines.append("")
        lines.append(f"{'per tenant':<20}{'trips':>11}{'suppressed':>14}{'isolated s':>16}")
        for t in tenants:
            tb = baseline.per_tenant.get(t) or TenantFigures()
            tp = proposed.per_tenant.get(t) or TenantFigures()
            lines.append(
                f"{t[:19]:<20}{f'{tb.trips}->{tp.trips}':>11}"
                f"{f'{tb.suppressed}->{tp.suppressed}':>14}"
                f"{_number(tb.isolated_seconds) + '->' + _number(tp.isolated_seconds):>16}"
            )
    return "\n".join(lines)


def _cells(spans: Sequence[Span], since: datetime, until: datetime, width: int) -> str:
    total = (until - since).total_seconds() or 1.0
    cells = [False] * width
    for start, end in spans:
        a = int((start - since).total_seconds() / total * width)
        b = int((end - since).total_seconds() / total * width - 1e-9)
        for i in range(max(0, a), min(width - 1, b) + 1):
            cells[i] = True
    return "".join("#" if c else "." for c in cells)


def text_timeline(
    baseline: Figures, proposed: Figures, *, since: datetime, until: datetime, width: int = 60
) -> str:
    """Two lines per tenant: b (baseline) and p (proposed); # isolated, . not."""
    tenants = busiest(baseline, proposed)
    head = (
        f"timeline {since.isoformat(timespec='seconds')} .. {until.isoformat(timespec='seconds')}"
    )
    if not tenants:
        return head + "\n  (no tenant isolated in either run)"
    lines = [head + "  (# isolated; b baseline, p proposed)"]
    for t in tenants:
        for tag, figures in (("b", baseline), ("p", proposed)):
            f = figures.per_tenant.get(t)
            lines.append(f"{t[:19]:<20}{tag} |{_cells(f.spans if f else [], since, until, width)}|")
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------


def _svg(baseline: Figures, proposed: Figures, since: datetime, until: datetime) -> str:
    tenants = busiest(baseline, proposed)
    label_w, chart_w, row_h, top = 170, 760, 26, 30
    height = top + row_h * max(1, len(tenants)) + 30
    total = (until - since).total_seconds() or 1.0

    def x(at: datetime) -> float:
        return label_w + (at - since).total_seconds() / total * chart_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + chart_w + 50}" '
        f'height="{height}" role="img" aria-label="isolation timeline">',
        f'<rect x="{label_w}" y="{top - 6}" width="{chart_w}" '
        f'height="{row_h * max(1, len(tenants)) + 6}" fill="#f6f6f6"/>',
    ]
    for i in range(5):
        at_x = label_w + chart_w * i / 4
        seconds = total * i / 4
        parts.append(
            f'<line x1="{at_x:.1f}" y1="{top - 6}" x2="{at_x:.1f}" '
            f'y2="{height - 24}" stroke="#ccc"/>'
            f'<text x="{at_x:.1f}" y="{height - 8}" font-size="11" text-anchor="middle">'
            f"+{_number(seconds)} s</text>"
        )
    for row, t in enumerate(tenants):
        y = top + row * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" font-size="12" text-anchor="end">'
            f"{html.escape(t[:28])}</text>"
        )
        for offset, figures, colour, name in (
            (0, baseline, _BASE_COLOUR, "baseline"),
            (10, proposed, _PROPOSED_COLOUR, "proposed"),
        ):
            f = figures.per_tenant.get(t)
            for start, end in f.spans if f else []:
                w = max(1.0, x(end) - x(start))
                parts.append(
                    f'<rect x="{x(start):.1f}" y="{y + offset}" width="{w:.1f}" height="8" '
                    f'fill="{colour}"><title>{html.escape(t)} {name}: '
                    f"{start.isoformat(timespec='seconds')} .. "
                    f"{end.isoformat(timespec='seconds')}</title></rect>"
                )
    if not tenants:
        parts.append(f'<text x="{label_w + 10}" y="{top + 14}">no tenant isolated</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(
    baseline: Figures,
    proposed: Figures,
    *,
    since: datetime,
    until: datetime,
    changes: Mapping[str, tuple[object, object]],
) -> str:
    proposal = (
        ", ".join(
            f"<code>{html.escape(n)}</code> {html.escape(str(a))} &rarr; {html.escape(str(b))}"
            for n, (a, b) in changes.items()
        )
        or "no change"
    )
    rows = "".join(
        f"<tr><td>{html.escape(label.strip())}</td><td>{_number(b)}</td><td>{_number(p)}</td>"
        f"<td>{_signed(p - b)}</td></tr>"
        for label, b, p in summary_rows(baseline, proposed)
    )
    window = f"{since.isoformat(timespec='seconds')} &ndash; {until.isoformat(timespec='seconds')}"
    legend = (
        f'<span style="color:{_BASE_COLOUR}">&#9632; baseline</span> &nbsp; '
        f'<span style="color:{_PROPOSED_COLOUR}">&#9632; proposed</span>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>What-if replay {window}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 12px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head>
<body>
<h1>What-if replay</h1>
<p>Window: {window}. Proposed: {proposal}.</p>
<table><tr><th></th><th>baseline</th><th>proposed</th><th>delta</th></tr>{rows}</table>
<h2>Isolation per tenant</h2>
<p>{legend} (each row: baseline above, proposed below)</p>
{_svg(baseline, proposed, since, until)}
</body></html>
"""
