"""Charts as inline SVG for the `report` sink: drawn as text, no library,
no script, readable with JavaScript off and in any browser.

Each chart is an `<svg role="img">` with a `<title>` (its name for screen
readers), titled axes, and its data points as elements carrying
`data-x`/`data-y` and a `<title>` each (a tooltip on hover, and what a test
counts). Colours are the Okabe-Ito palette (distinguishable with the common
colour-vision deficiencies); lines also differ by marker, not colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

# Okabe-Ito, without its yellow (too light for lines on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
INK, GRID, MUTED = "#222222", "#dddddd", "#666666"


def _nice(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.0f}"


def _scale(low: float, high: float, out_low: float, out_high: float):  # type: ignore[no-untyped-def]
    span = (high - low) or 1.0
    return lambda v: out_low + (v - low) / span * (out_high - out_low)


def _frame(width: int, height: int, title: str, body: list[str], kind: str) -> str:
    label = escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" data-chart="{kind}" aria-label="{label}">'
        f"<title>{label}</title>" + "".join(body) + "</svg>"
    )


def _axes(left: int, top: int, right: int, bottom: int, x_title: str, y_title: str) -> list[str]:
    middle = (top + bottom) / 2
    return [
        _el("line", x1=left, y1=bottom, x2=right, y2=bottom, stroke=INK),
        _el("line", x1=left, y1=top, x2=left, y2=bottom, stroke=INK),
        _label((left + right) / 2, bottom + 30, x_title, size=11, color=MUTED),
        _el("text", y_title, x=12, y=f"{middle:.1f}", text_anchor="middle", font_size=11, fill=MUTED,
            transform=f"rotate(-90 12 {middle:.1f})"),
    ]


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def _el(tag: str, text: str = "", **attrs: object) -> str:
    """One SVG element: attributes by keyword (`class_` for class, `_` for
    `-`), `text` (escaped) and a nested `<title>` tooltip in `tip`."""
    tip = attrs.pop("tip", None)
    pairs = " ".join(f'{k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items())
    inner = escape(text) + (f"<title>{escape(str(tip))}</title>" if tip is not None else "")
    return f"<{tag} {pairs}>{inner}</{tag}>"


def _label(x: float, y: float, text: str, anchor: str = "middle", size: int = 10, color: str = INK) -> str:
    return _el("text", text, x=f"{x:.1f}", y=f"{y:.1f}", text_anchor=anchor, font_size=size, fill=color)


def line_chart(title: str, points: Sequence[tuple[float, float, str]], *, y_title: str,
               x_title: str = "event time (window start, UTC)", color: str = PALETTE[0], dates: bool = True,
               width: int = 300, height: int = 180) -> str:  # fmt: skip
    """One series: points (x: Unix seconds, or a number with `dates` off; value; tooltip text)."""
    left, top, right, bottom = 56, 14, width - 12, height - 42
    body = _axes(left, top, right, bottom, x_title, y_title)
    if not points:
        body.append(_label(width / 2, height / 2, "no data", color=MUTED))
        return _frame(width, height, title, body, "line")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    y_low, y_high = min(ys), max(ys)
    pad = (y_high - y_low) * 0.1 or abs(y_high) * 0.1 or 1.0
    y_low, y_high = y_low - pad, y_high + pad
    x = _scale(min(xs), max(xs), left + 8, right - 8)
    y = _scale(y_low, y_high, bottom, top)
    for value in (y_low + pad, y_high - pad):
        body.append(_el("line", x1=left, y1=f"{y(value):.1f}", x2=right, y2=f"{y(value):.1f}", stroke=GRID))
        body.append(_label(left - 4, y(value) + 4, _nice(value), "end"))
    for at, anchor in ((min(xs), "start"), (max(xs), "end")):
        body.append(_label(x(at), bottom + 14, _date(at) if dates else _nice(at), anchor))
    path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b, _ in points)
    body.append(_el("polyline", points=path, fill="none", stroke=color, stroke_width=2))
    for a, b, tip in points:
        body.append(_el("circle", class_="point", cx=f"{x(a):.1f}", cy=f"{y(b):.1f}", r=3, fill=color,
                        data_x=f"{a:.0f}", data_y=b, tip=tip))  # fmt: skip
    return _frame(width, height, title, body, "line")


def bar_chart(title: str, bars: Sequence[tuple[str, float]], *, x_title: str, color: str = PALETTE[0],
              width: int = 640) -> str:  # fmt: skip
    """Horizontal bars, largest first as given: (label, value)."""
    row, left, top = 20, 170, 10
    right = width - 60
    height = top + row * max(1, len(bars)) + 44
    body = _axes(left, top, right, height - 44, x_title, "")
    if not bars:
        body.append(_label(width / 2, top + 14, "none", color=MUTED))
        return _frame(width, height, title, body, "bar")
    x = _scale(0, max(v for _, v in bars) or 1.0, left, right)
    for i, (label, value) in enumerate(bars):
        y = top + i * row + 3
        body.append(_label(left - 6, y + 11, label, "end", 11))
        length = f"{max(1.0, x(value) - left):.1f}"
        body.append(_el("rect", class_="point", x=left, y=y, width=length, height=row - 6, fill=color,
                        data_x=label, data_y=value, tip=f"{label}: {_nice(value)}"))  # fmt: skip
        body.append(_label(x(value) + 4, y + 11, _nice(value), "start"))
    return _frame(width, height, title, body, "bar")


def timeline_chart(title: str, requests: Sequence[int], *, limit: float | None, retries: Sequence[int] = (),
                   throttled: Sequence[int] = (), open_spans: Sequence[tuple[float, float]] = (),
                   width: int = 640, height: int = 200) -> str:  # fmt: skip
    """Requests per second of one endpoint (bars), its rate limit (a dashed
    line), retries (a second colour, over the requests) and 429 answers
    (marked), and the seconds its breaker was open (shaded). A long run is
    drawn in bins of several seconds (at most BINS bars), the limit scaled
    to a bin."""
    left, top, right, bottom = 56, 14, width - 12, height - 42
    per = math.ceil(max(len(requests), len(retries), 1) / BINS)  # seconds per bar
    if per > 1:
        requests, retries, throttled = (_binned(c, per) for c in (requests, retries, throttled))
    unit = "second" if per == 1 else f"{per} s"
    allowed = limit * per if limit else None  # per bar
    x_title = f"time since the run started ({unit} a bar)"
    body = _axes(left, top, right, bottom, x_title, f"requests per {unit}")
    bars = max(len(requests), len(retries), 1)
    high = max([*requests, *retries, allowed or 0, 1])
    x = _scale(0, bars, left, right)
    y = _scale(0, high * 1.15, bottom, top)
    step = max(1.0, (right - left) / bars - 2)
    for start, end in open_spans:  # in seconds; one still open ends at the chart's edge
        end = min(end, bars * per)
        body.append(_el("rect", class_="breaker-open", x=f"{x(start / per):.1f}", y=top, height=bottom - top,
                        width=f"{max(2.0, x(end / per) - x(start / per)):.1f}", fill=PALETTE[4], opacity=0.25,
                        tip=f"breaker open {start:.1f}-{end:.1f} s"))  # fmt: skip
    for value in (0, high):
        body.append(_label(left - 4, y(value) + 4, _nice(value), "end"))
    body.append(_label(right, bottom + 14, f"{bars * per} s", "end"))

    def when(bar: int) -> str:
        return f"second {bar}" if per == 1 else f"seconds {bar * per}-{bar * per + per - 1}"

    for series, counts, color in (("point", requests, PALETTE[0]), ("retry", retries, PALETTE[1])):
        what = "requests" if series == "point" else "retries"
        for bar, count in enumerate(counts):
            if count:
                top_of, tip = y(count), f"{when(bar)}: {count} {what}"
                body.append(_el("rect", class_=series, x=f"{x(bar) + 1:.1f}", y=f"{top_of:.1f}",
                                width=f"{step:.1f}", height=f"{bottom - top_of:.1f}", fill=color,
                                data_x=bar * per, data_y=count, tip=tip))
    for bar, count in enumerate(throttled):
        if count:
            body.append(_el("text", "429", class_="throttled", x=f"{x(bar) + step / 2:.1f}", y=top + 10,
                            text_anchor="middle", font_size=10, fill=PALETTE[1],
                            tip=f"{when(bar)}: {count} answered 429"))  # fmt: skip
    if allowed:
        level = f"{y(allowed):.1f}"
        body.append(_el("line", class_="limit", x1=left, y1=level, x2=right, y2=level, stroke=INK,
                        stroke_dasharray="5 4", tip=f"rate limit: {_nice(limit or 0)} a second"))  # fmt: skip
        body.append(_label(right, y(allowed) - 4, f"limit {_nice(allowed)} per {unit}", "end"))
    return _frame(width, height, title, body, "timeline")


BINS = 240  # bars a timeline draws at most


def _binned(counts: Sequence[int], per: int) -> list[int]:
    return [sum(counts[i : i + per]) for i in range(0, len(counts), per)]


def change(first: float, last: float) -> str:
    """A price change in words: '+12.3%'."""
    if not first or math.isnan(first):
        return "n/a"
    return f"{(last - first) / first * 100:+.1f}%"
