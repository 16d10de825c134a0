"""Small inline SVG figures drawn on the server: a histogram, bars per layer, a scatter.

Only numbers and escaped labels go into the markup, which is returned as
:class:`markupsafe.Markup` so the templates insert it as it is. No script, no style
attribute: colours are presentation attributes, allowed by the page's CSP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from markupsafe import Markup, escape

W, H = 420, 170
PAD_L, PAD_R, PAD_T, PAD_B = 46, 10, 18, 34
POS, NEG, INK, GRID = "#e8710a", "#1a73e8", "#3c4043", "#dadce0"


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    a = abs(x)
    return f"{x:.0f}" if a >= 100 else f"{x:.2g}" if a < 0.01 else f"{x:.3g}"


def _frame(title: str, x0: str, x1: str, ymax: str, xlabel: str, body: list[str],
           w: int = W, h: int = H, y0: str = "0") -> Markup:
    """Axes, end labels and the ``body`` elements in one ``<svg>``."""
    px1, py1 = w - PAD_R, h - PAD_B
    parts = [f'<svg class="fig" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
             f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>{escape(title)}</title>',
             f'<line x1="{PAD_L}" y1="{py1}" x2="{px1}" y2="{py1}" stroke="{INK}"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{py1}" stroke="{INK}"/>',
             *body,
             f'<text x="{PAD_L}" y="{py1 + 14}" font-size="11" fill="{INK}">{escape(x0)}</text>',
             f'<text x="{px1}" y="{py1 + 14}" font-size="11" fill="{INK}" '
             f'text-anchor="end">{escape(x1)}</text>',
             f'<text x="{(PAD_L + px1) / 2}" y="{h - 4}" font-size="11" fill="{INK}" '
             f'text-anchor="middle">{escape(xlabel)}</text>',
             f'<text x="{PAD_L - 4}" y="{PAD_T + 4}" font-size="11" fill="{INK}" '
             f'text-anchor="end">{escape(ymax)}</text>',
             f'<text x="{PAD_L - 4}" y="{py1}" font-size="11" fill="{INK}" '
             f'text-anchor="end">{escape(y0)}</text>', "</svg>"]
    return Markup("".join(parts))


def histogram(edges: np.ndarray, counts: np.ndarray, title: str,
              xlabel: str = "activation") -> Markup:
    """Bars of ``counts`` over bins ``edges`` (``len(edges) == len(counts) + 1``); bins above 0
    orange, below blue, a line at 0."""
    edges = np.asarray(edges, np.float64)
    counts = np.asarray(counts, np.float64)
    if counts.size == 0 or not np.isfinite(edges).all() or edges[-1] <= edges[0]:
        return Markup('<p class="muted">no values</p>')
    x0, x1 = float(edges[0]), float(edges[-1])
    top = max(float(counts.max()), 1.0)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(v: float) -> float:
        return PAD_L + pw * (v - x0) / (x1 - x0)

    body = []
    for a, b, c in zip(edges[:-1], edges[1:], counts):
        if c <= 0:
            continue
        hgt = ph * c / top
        colour = POS if (a + b) / 2 > 0 else NEG
        body.append(f'<rect x="{sx(a):.1f}" y="{PAD_T + ph - hgt:.1f}" '
                    f'width="{max(sx(b) - sx(a) - 0.5, 0.5):.1f}" height="{hgt:.1f}" '
                    f'fill="{colour}"><title>{_fmt(a)} to {_fmt(b)}: {int(c)}</title></rect>')
    if x0 < 0 < x1:
        body.append(f'<line x1="{sx(0):.1f}" y1="{PAD_T}" x2="{sx(0):.1f}" '
                    f'y2="{PAD_T + ph}" stroke="{INK}" stroke-dasharray="3 3"/>')
    return _frame(title, _fmt(x0), _fmt(x1), f"{int(top)}", xlabel, body)


def bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str,
         highlight: int | None = None) -> Markup:
    """Vertical bars, one per label (e.g. per layer); ``highlight`` drawn darker."""
    vals = np.nan_to_num(np.asarray(values, np.float64))
    if vals.size == 0:
        return Markup('<p class="muted">no values</p>')
    top = max(float(vals.max()), 1e-12)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = pw / vals.size
    body = []
    for i, (lab, v) in enumerate(zip(labels, vals)):
        hgt = ph * max(v, 0) / top
        x = PAD_L + i * step
        colour = INK if i == highlight else POS
        body.append(f'<rect x="{x + step * 0.15:.1f}" y="{PAD_T + ph - hgt:.1f}" '
                    f'width="{step * 0.7:.1f}" height="{hgt:.1f}" fill="{colour}">'
                    f'<title>{escape(lab)}: {_fmt(v)}</title></rect>')
        if vals.size <= 32:
            body.append(f'<text x="{x + step / 2:.1f}" y="{PAD_T + ph + 12}" font-size="10" '
                        f'fill="{INK}" text-anchor="middle">{escape(lab)}</text>')
    return _frame(title, "", "", _fmt(top), xlabel, body)


def scatter(x: np.ndarray, y: np.ndarray, title: str, xlabel: str, ylabel: str,
            max_points: int = 4000) -> Markup:
    """Points ``(x, y)``; at most ``max_points`` (a fixed random sample) are drawn."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return Markup('<p class="muted">no values</p>')
    if x.size > max_points:
        pick = np.random.default_rng(0).choice(x.size, max_points, replace=False)
        x, y = x[pick], y[pick]
    w, h = 420, 340
    lo_x, hi_x = float(x.min()), float(x.max())
    lo_y, hi_y = float(y.min()), float(y.max())
    hi_x, hi_y = (hi_x if hi_x > lo_x else lo_x + 1), (hi_y if hi_y > lo_y else lo_y + 1)
    pw, ph = w - PAD_L - PAD_R, h - PAD_T - PAD_B
    px = PAD_L + pw * (x - lo_x) / (hi_x - lo_x)
    py = PAD_T + ph * (1 - (y - lo_y) / (hi_y - lo_y))
    dots = "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.8"/>' for a, b in zip(px, py))
    body = [f'<g fill="{NEG}" fill-opacity="0.45">{dots}</g>',
            f'<text x="{PAD_L + 4}" y="{PAD_T + 10}" font-size="11" fill="{INK}">'
            f'{escape(ylabel)}</text>']
    return _frame(title, _fmt(lo_x), _fmt(hi_x), _fmt(hi_y), xlabel, body, w, h, _fmt(lo_y))


def signed_bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str,
                limit: float = 1.0) -> Markup:
    """Bars up (orange) or down (blue) from a zero line, on the fixed range ``±limit`` (a
    correlation per layer)."""
    vals = np.clip(np.nan_to_num(np.asarray(values, np.float64)), -limit, limit)
    if vals.size == 0:
        return Markup('<p class="muted">no values</p>')
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    zero = PAD_T + ph / 2
    step = pw / vals.size
    body = [f'<line x1="{PAD_L}" y1="{zero:.1f}" x2="{W - PAD_R}" y2="{zero:.1f}" '
            f'stroke="{GRID}"/>']
    for i, (lab, v) in enumerate(zip(labels, vals)):
        hgt = (ph / 2) * abs(v) / limit
        x = PAD_L + i * step
        y = zero - hgt if v > 0 else zero
        body.append(f'<rect x="{x + step * 0.15:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" '
                    f'height="{max(hgt, 0.5):.1f}" fill="{POS if v > 0 else NEG}">'
                    f'<title>{escape(lab)}: {_fmt(v)}</title></rect>')
        if vals.size <= 32:
            body.append(f'<text x="{x + step / 2:.1f}" y="{PAD_T + ph + 12}" font-size="10" '
                        f'fill="{INK}" text-anchor="middle">{escape(lab)}</text>')
    return _frame(title, "", "", _fmt(limit), xlabel, body, y0=_fmt(-limit))
