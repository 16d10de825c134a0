"""Small pieces: token display, shades, slots shown, parameter checks, SVG escaping."""

from __future__ import annotations

import numpy as np
import pytest

from neurondb.serve import params as P
from neurondb.serve import svg
from neurondb.serve.errors import BadRequestError, NotFoundError
from neurondb.serve.pages.neuron_stats import shown_slots
from neurondb.serve.tokens import example_tokens, shade


def texts(raw, kinds=None):
    kinds = kinds or ["input"] * len(raw)
    return [("␠" if t.space else "") + t.text
            for t in example_tokens(raw, kinds, [None] * len(raw), None, 1.0)]


def test_tokenizer_markers_become_spaces():
    assert texts(["Ġthe", "Ġmov", "ie", "Ġwas", "Ġgreat"]) == ["the", "␠mov", "ie", "␠was",
                                                             "␠great"]
    assert texts(["▁the", "▁film", "s"]) == ["the", "␠film", "s"]
    assert texts(["the", "act", "##ing", "Ċ"]) == ["the", "␠act", "ing", "␠\n"]
    assert texts(["[CLS]", "good", "[SEP]"], ["special", "input", "special"]) == [
        "[CLS]", "good", "[SEP]"]
    assert texts(["<prompt:0>", "<prompt:1>", "hi"], ["prompt", "prompt", "input"]) == [
        "P0", "P1", "hi"]


def test_shades():
    assert shade(None, 1.0) == "" and shade(float("nan"), 1.0) == "" and shade(1.0, 0) == ""
    assert shade(1.0, 1.0) == "p9" and shade(-1.0, 1.0) == "n9" and shade(5.0, 1.0) == "p9"
    assert shade(0.5, 1.0) == "p4" and shade(0.1, 1.0) == ""
    toks = example_tokens(["a", "b"], ["input", "input"], [2.0, -1.0], 0, 2.0)
    assert [(t.shade, t.peak, t.value) for t in toks] == [("p9", True, 2.0), ("n4", False, -1.0)]


def test_slots_shown():
    assert shown_slots(["prompt:1", "mask", "prompt:0", "first"]) == [
        "mask", "first", "prompt:0", "prompt:1"]  # slot order: mask before first
    assert shown_slots([f"pos:{i}" for i in range(30)]) == []
    assert len(shown_slots([f"prompt:{i}" for i in range(20)] + ["mask"])) == 4


def test_params():
    assert P.path_int("12", "neuron", 16) == 12
    for bad in ("16", "-1", "1.0", "٣", "0x1", "9" * 12, ""):
        with pytest.raises(NotFoundError):
            P.path_int(bad, "neuron", 16)
    assert P.integer({"n": " 3 "}, "n", 1, 1, 5) == 3 and P.integer({}, "n", 1, 1, 5) == 1
    for bad in ({"n": "6"}, {"n": "x"}, {"n": "nan"}):
        with pytest.raises(BadRequestError):
            P.integer(bad, "n", 1, 1, 5)
    with pytest.raises(BadRequestError):
        P.number({"t": "nan"}, "t", 0.5, 0.0, 1.0)
    with pytest.raises(BadRequestError):
        P.known({"a": "1", "zz": "2"}, ("a",))


def test_svg_escapes_titles_and_handles_empty_input():
    out = svg.histogram(np.array([0.0, 1.0, 2.0]), np.array([3, 4]), "<script>x</script>")
    assert "<script>" not in out and "&lt;script&gt;" in out and out.count("<rect") == 2
    assert "no values" in svg.histogram(np.array([]), np.array([]), "t")
    assert "no values" in svg.scatter(np.array([np.nan]), np.array([1.0]), "t", "x", "y")
    big = svg.scatter(np.arange(10_000.0), np.arange(10_000.0), "t", "x", "y", max_points=500)
    assert big.count("<circle") == 500


def test_signed_bars_go_both_ways():
    out = svg.signed_bars(["0", "1"], [0.5, -0.25], "rho", "layer")
    assert out.count("<rect") == 2 and svg.POS in out and svg.NEG in out
