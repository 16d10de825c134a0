"""Validation of URL path and query parameters: a bad path part is a 404, a bad query
parameter a 400, each with a one-line message (never a traceback)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from neurondb.serve.errors import BadRequestError, NotFoundError

#: Longest text a query parameter may carry (SQL included).
MAX_PARAM_CHARS = 20_000


def path_int(value: str, what: str, upper: int) -> int:
    """A path part that must be an integer in ``0..upper-1`` (else 404)."""
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise NotFoundError(f"{what} {value!r} is not a number")
    n = int(value)
    if not 0 <= n < upper:
        raise NotFoundError(f"{what} {n} is out of range (0..{upper - 1})")
    return n


def text(params: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """A query parameter as text (stripped; empty counts as absent)."""
    v = params.get(name)
    if v is None or not v.strip():
        return default
    if len(v) > MAX_PARAM_CHARS:
        raise BadRequestError(f"parameter {name!r} is longer than {MAX_PARAM_CHARS} characters")
    return v.strip()


def integer(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within ``lo..hi`` (else 400)."""
    v = text(params, name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise BadRequestError(f"parameter {name!r} must be an integer, not {v[:40]!r}") from None
    if not lo <= n <= hi:
        raise BadRequestError(f"parameter {name!r} must be between {lo} and {hi}, not {n}")
    return n


def optional_int(params: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    """An optional integer query parameter within ``lo..hi`` (else 400)."""
    if text(params, name) is None:
        return None
    return integer(params, name, lo, lo, hi)


def number(params: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    """A float query parameter within ``lo..hi`` (else 400)."""
    v = text(params, name)
    if v is None:
        return default
    try:
        x = float(v)
    except ValueError:
        raise BadRequestError(f"parameter {name!r} must be a number, not {v[:40]!r}") from None
    if not lo <= x <= hi:  # NaN fails too
        raise BadRequestError(f"parameter {name!r} must be between {lo:g} and {hi:g}, not {v}")
    return x


def choice(params: Mapping[str, str], name: str, options: Sequence[str],
           default: str | None = None) -> str | None:
    """A query parameter that must be one of ``options`` (else 400)."""
    v = text(params, name)
    if v is None:
        return default
    if v not in options:
        raise BadRequestError(f"parameter {name!r} must be one of {', '.join(options)}, "
                              f"not {v[:40]!r}")
    return v


def boolean(params: Mapping[str, str], name: str) -> bool | None:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``), or None when absent."""
    v = text(params, name)
    if v is None:
        return None
    low = v.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise BadRequestError(f"parameter {name!r} must be true or false, not {v[:40]!r}")


def known(params: Mapping[str, str], allowed: Sequence[str]) -> None:
    """Refuse query parameters a page does not take (a typo is a 400, not silently ignored)."""
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise BadRequestError(f"unknown parameter(s) {', '.join(repr(e[:40]) for e in extra)}; "
                              f"this page takes {', '.join(allowed) or 'none'}")
