"""How an example's tokens are shown: readable text for each model token, and a shade.

Tokenizer markers are turned into what they mean (``Ġ``/``▁`` start a word, ``##`` continues
one, ``Ċ`` is a newline); special and soft-prompt tokens are shown apart. Shades are levels
``p1..p9`` (positive) and ``n1..n9`` (negative) of CSS classes, so the page needs no inline
style (the Content-Security-Policy forbids it). All text is escaped by the templates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = 9
SPACE_MARKERS = ("Ġ", "▁")


@dataclass
class Token:
    """One shown token: ``text`` as displayed, ``space`` whether a space goes before it,
    ``raw`` the model's token, ``value`` the neuron's activation there (None: not captured),
    ``shade`` a CSS class, ``peak`` whether it is the example's most extreme captured token,
    ``kind`` input/special/prompt/mask."""

    text: str
    space: bool
    raw: str
    value: float | None
    shade: str
    peak: bool
    kind: str


def shade(value: float | None, scale: float) -> str:
    """CSS class of ``value`` relative to ``scale`` (the largest |value| shown)."""
    if value is None or not np.isfinite(value) or scale <= 0:
        return ""
    level = int(LEVELS * min(1.0, abs(value) / scale))  # under 1/9 of the scale: no shade
    if level == 0:
        return ""
    return f"{'p' if value > 0 else 'n'}{level}"


def marker_style(tokens: list[str]) -> bool:
    """Whether the tokenizer marks word starts (GPT-2 ``Ġ``, SentencePiece ``▁``) rather than
    word continuations (WordPiece ``##``)."""
    return any(t and t[0] in SPACE_MARKERS for t in tokens)


def display(token: str, kind: str, first: bool, markers: bool) -> str:
    """The text shown for one token (with the space before it, if any)."""
    if kind == "prompt":
        return token.strip("<>").replace("prompt:", "P")
    if kind == "special":
        return token
    t = token.replace("Ċ", "\n").replace("ĉ", "\t")
    if markers:
        for m in SPACE_MARKERS:
            if t.startswith(m):
                return ("" if first else " ") + t[len(m):]
        return t
    if t.startswith("##"):
        return t[2:]
    return t if first else " " + t


def example_tokens(raw: list[str], kinds: list[str], values: list[float | None],
                   peak: int | None, scale: float) -> list[Token]:
    """The shown tokens of one example; ``peak`` is the index of the marked token."""
    markers = marker_style(raw)
    out = []
    first = True
    for i, (t, k, v) in enumerate(zip(raw, kinds, values)):
        text = display(str(t), str(k), first, markers)
        if k not in ("prompt", "special"):
            first = False
        space = text.startswith(" ")
        out.append(Token(text=text[1:] if space else text, space=space, raw=str(t), value=v, shade=shade(v, scale), peak=i == peak,
                         kind=str(k)))
    return out
