"""The Jinja2 environment of the app's templates: autoescaping on for every template,
undefined names an error, and the number formats the pages share."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2

from neurondb.report.sections import acc, count, pct, score

TEMPLATES = Path(__file__).parent / "templates"


def num(v: object, digits: int = 3) -> str:
    """A number to ``digits`` significant digits; — for None/NaN."""
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—" if v is None else str(v)
    if not math.isfinite(x):
        return "—"
    x = x + 0.0  # no "-0"
    if x != 0 and abs(x) < 10 ** -(digits + 1):
        return "0"  # a negligible value that would print as "-3e-05"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def with_params(base: str, params: dict, **changes) -> str:
    """``base?...`` with ``params`` updated by ``changes`` (None drops a parameter)."""
    merged = {**{k: v for k, v in params.items() if v not in (None, "")}, **changes}
    merged = {k: v for k, v in merged.items() if v is not None and v != ""}
    return base + ("?" + urlencode(merged) if merged else "")


def environment() -> jinja2.Environment:
    """The templates' environment (autoescape for all, strict undefined)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(num=num, pct=pct, score=score, count=count, acc=acc,
                       q=lambda s: quote(str(s), safe=""))
    env.globals.update(with_params=with_params)
    return env
