"""`neurondb report`: the page, its figures and numbers, absent results and errors."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from neurondb.cli.app import app
from neurondb.report import html as H
from neurondb.report import write_report
from neurondb.store import open_store

from .conftest import PRUNED_EVAL, SECOND, TOP, write_table

runner = CliRunner()


class Page(HTMLParser):
    """The parts of a report page the tests look at: images, sections, tables as rows of
    cell texts, absent-section notes; and whether every tag was closed."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.sections: dict[str, str] = {}   # id -> text inside
        self.h2: list[str] = []
        self.tables: dict[str, list[list[list[str]]]] = {}   # section id -> tables -> rows
        self.absent: dict[str, str] = {}
        self.stack: list[str] = []
        self.scripts = 0
        self._section: str | None = None
        self._absent: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._h2 = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "section":
            self._section = a["id"]
            self.sections[self._section] = ""
            self.tables[self._section] = []
        if tag == "p" and a.get("class") == "absent":
            self._absent = a["id"]
            self.absent[self._absent] = ""
        if tag == "h2":
            self._h2 = True
            self.h2.append("")
        if tag == "table" and self._section:
            self.tables[self._section].append([])
        if tag == "tr" and self._section:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()
        if tag == "section":
            self._section = None
        if tag == "p":
            self._absent = None
        if tag == "h2":
            self._h2 = False
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.tables[self._section][-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._section:
            self.sections[self._section] += data
        if self._absent:
            self.absent[self._absent] += data
        if self._h2:
            self.h2[-1] += data
        if self._cell is not None:
            self._cell.append(data)


def check_png(src: str) -> np.ndarray:
    """Decode an embedded PNG; it must be a real figure (not tiny, not blank)."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    img = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))
    assert img.format == "PNG" and img.width >= 200 and img.height >= 150
    px = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert px.var() > 0
    return px


@pytest.fixture(scope="module")
def report(full_store, tmp_path_factory):
    """The full store's report, written by the CLI as a user runs it: (page, output, path)."""
    out = tmp_path_factory.mktemp("out") / "r.html"
    res = runner.invoke(app, ["report", str(full_store.root), "--out", str(out),
                              "--prompts", str(full_store.prompts), "--condensed",
                              str(full_store.condensed), "--title", "T <&> report"])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    return Page(text), res.output, out, text


def test_page_is_one_valid_file_with_a_figure_per_plot(report):
    page, _, out, text = report
    assert page.stack == [] and text.startswith("<!DOCTYPE html>")
    assert page.scripts == 0 and "http://" not in text and "https://" not in text
    assert "T &lt;&amp;&gt; report" in text
    expected = {"rankings": 3, "correlations": 1, "overlaps": 1, "masks": 1, "transfers": 1,
                "suppression": 1, "pruning": 1, "prompts": 1}
    assert set(page.sections) == set(expected) | {"examples", "findings", "condensation"}
    assert page.absent == {}
    n_img = sum(expected.values())
    assert len(page.images) == n_img == len(re.findall(r'<img src="data:image/png;base64,', text))
    for src in page.images:
        check_png(src)


def test_header_has_provenance(report, full_store):
    _, _, _, text = report
    st = open_store(full_store.root)
    for info in st.runs():
        assert f"<td>{info.run}</td>" in text
        assert f"<td class=\"num\">{info.n_examples}</td>" in text
    assert "synthetic" in text and "32 (encoder: 2 layers × 16)" in text


def test_rankings_list_the_planted_neuron_first(report):
    page, *_ = report
    tables = page.tables["rankings"]
    assert len(tables) == 3
    head, first = tables[0][0], tables[0][1]        # ranking G (names sorted: G, P, R)
    row = dict(zip(head, first))
    assert (row["stack"], row["layer"], row["neuron"]) == tuple(map(str, TOP))
    assert row["rank"] == "1" and float(row["score"]) > 0.9
    p = [dict(zip(tables[1][0], r)) for r in tables[1][1:]]
    assert len(p) == 20 and (p[0]["layer"], p[0]["neuron"]) == ("1", "5")
    assert {(r["layer"], r["neuron"]) for r in p[:2]} == {("1", "5"), ("0", "7")}


def test_top_examples_are_the_highest_activations(report, full_store):
    page, *_ = report
    st = open_store(full_store.root)
    # the input slot only (mask): soft-prompt slots are left out of the examples
    col = st.activations(TOP[1], run="ev", neurons=[TOP[2]])[:, 0].reshape(-1, 3)[:, 2]
    want = np.argsort(-col, kind="stable")[:5] + 1000       # example ids start at 1000
    tables = page.tables["examples"]
    assert len(tables) == 5
    rows = [dict(zip(tables[0][0], r)) for r in tables[0][1:]]
    assert [int(r["example_id"]) for r in rows] == list(want)
    assert [float(r["activation"]) for r in rows] == pytest.approx(np.sort(col)[::-1][:5], rel=1e-3)
    assert all(r["label"] == "1 (pos)" and r["slot"] == "mask" for r in rows)
    assert f"{SECOND[0]} layer {SECOND[1]}, neuron {SECOND[2]}" in page.sections["examples"]
    # the skill (predictivity) ranking, not the random one; the class it fires on is named
    assert "Ranking G" in page.sections["examples"] or "Ranking P" in page.sections["examples"]
    assert "above its baseline on pos" in page.sections["examples"]
    assert "above its baseline on neg" in page.sections["examples"]   # the inhibitory plant


def test_findings_state_each_claim_with_a_verdict(report):
    page, *_ = report
    (tab,) = page.tables["findings"]
    rows = {r[1]: dict(zip(tab[0], r)) for r in tab[1:]}
    sup = next(r for r in rows.values() if r["claim"].startswith("suppressing skill"))
    assert sup["verdict"] == "holds" and "5%: skill 0.600 vs random 0.850" in sup["evidence"]
    prune = next(r for r in rows.values() if r["claim"].startswith("pruning"))
    assert prune["verdict"] == "holds" and "0.900 -> 0.890" in prune["evidence"]
    cond = next(r for r in rows.values() if r["claim"].startswith("re-tuning"))
    assert cond["verdict"] == "too noisy to tell" and "0.850 -> 0.880" in cond["evidence"]
    (sup_t,) = page.tables["suppression"]
    assert [dict(zip(sup_t[0], r))["skill below every random draw?"] for r in sup_t[1:]] == \
        ["holds"] * 3


def test_condensation_section_and_parameter_breakdown(report):
    page, *_ = report
    (tab,) = page.tables["condensation"]
    row = dict(zip(tab[0], tab[1]))
    assert (row["before"], row["after"], row["change"]) == ("0.850", "0.880", "+0.030")
    text = page.sections["pruning"]
    assert "Pruning 25.0% of the FFN neurons (8 of 32) removes" in text
    assert "769 parameters each" in text
    assert "not recorded" in text                      # the CLI was given no latency context


def test_pruning_numbers_are_the_tables(report):
    page, *_ = report
    search, ev = page.tables["pruning"]
    assert [r[0] for r in search[1:]] == ["0", "1", "2", "3"]
    rows = {r[0]: dict(zip(ev[0], r)) for r in ev[1:]}
    full, pruned = PRUNED_EVAL.iloc[0], PRUNED_EVAL.iloc[1]
    assert rows["pruned"]["speed-up"] == f"{full.latency_ms / pruned.latency_ms:.2f}×" == "1.60×"
    assert rows["full"]["speed-up"] == "1.00×"
    red = 1 - pruned.parameters / full.parameters
    assert rows["pruned"]["parameters removed"] == f"{100 * red:.1f}%"
    assert "chosen ratio 25.0%" in page.sections["pruning"] and "margin 0.02" in page.sections["pruning"]


def test_suppression_and_transfer_tables(report):
    page, *_ = report
    (sup,) = page.tables["suppression"]
    rows = [dict(zip(sup[0], r)) for r in sup[1:]]
    assert [r["suppressed"] for r in rows] == ["1.00%", "5.00%", "10.00%"]
    r5 = rows[1]
    assert r5["selected accuracy"] == "0.600" and r5["random mean"] == "0.850"
    assert r5["random std"] == f"{np.std([0.85, 0.87, 0.83]):.3f}" and r5["random seeds"] == "3"
    (tr,) = page.tables["transfers"]
    t = {(r[0], r[1]): dict(zip(tr[0], r)) for r in tr[1:]}
    # b's prompts on a: mean 0.715 over seeds, a's own prompts 0.915 -> 78.1 %
    assert t[("b", "a")]["accuracy"] == "0.715"
    assert t[("b", "a")]["relative (%)"] == f"{100 * 0.715 / 0.915:.1f}%"
    (tune,) = page.tables["prompts"]
    best = [dict(zip(tune[0], r))["best validation accuracy"] for r in tune[1:]]
    assert best == ["0.830", "0.840"]


def test_cli_prints_a_summary_and_the_path(report):
    _, output, out, _ = report
    assert f"report: {out}" in output
    for title in ("Neuron rankings by layer", "Suppression curves", "Pruning", "Prompt tuning"):
        assert title in output
    assert "10 figures" in output and "Findings against the papers" in output


def test_absent_results_are_noted_with_their_command(bare_store, tmp_path):
    summary = write_report(bare_store, tmp_path / "bare.html")
    page = Page((tmp_path / "bare.html").read_text())
    assert page.images == [] and page.sections == {}
    notes = page.absent
    assert "neurondb rank" in notes["rankings"] and "neurondb correlate" in notes["correlations"]
    assert "neurondb suppress" in notes["suppression"]
    assert "neurondb prune --search" in notes["pruning"]
    assert "neurondb transfer --store" in notes["transfers"]
    assert "--prompts" in notes["prompts"] and "--condensed" in notes["condensation"]
    assert not any(s.present for s in summary.sections) and summary.figures == 0
    assert "- Suppression curves" in summary.text()


def test_stats_only_run_skips_examples_and_bad_files_are_left_out(bare_store, tmp_path):
    from neurondb.query import random_ranking

    random_ranking(bare_store, seed=1, name="R")
    write_table(bare_store, "suppression", "broken", pd.DataFrame({"rate": [0.1]}), {})
    summary = write_report(bare_store, tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())
    assert len(page.images) == 1 and "rankings" in page.sections
    assert "no per-token activations" in page.absent["examples"]
    assert any("suppression/broken" in p and "selection" in p for p in summary.problems)
    assert "suppression/broken" in page.sections["problems"]


def test_errors_are_one_line(tmp_path, bare_store):
    for args in (["report", str(tmp_path)], ["report", str(tmp_path / "nope")],
                 ["report", str(bare_store), "--prompts", str(tmp_path / "missing")],
                 ["report", str(bare_store), "--out", str(tmp_path / "no" / "r.html")]):
        res = runner.invoke(app, args)
        assert res.exit_code != 0
        line = res.output.strip()
        assert line.startswith("error: ") and "\n" not in line, line
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert "not a neurondb store" in res.output


def test_table_cells_are_escaped():
    out = H.table(pd.DataFrame({"text": ["<script>alert('x')</script> & co"], "v": [0.5]}))
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp; co" in out
    assert '<td class="num">0.5</td>' in out


def test_a_single_seed_directory_given_as_a_path(bare_store, full_store, tmp_path):
    summary = write_report(bare_store, tmp_path / "p.html", prompts=full_store.prompts / "seed-2")
    assert [s.key for s in summary.sections if s.present] == ["prompts"]
    page = Page((tmp_path / "p.html").read_text())
    (tune,) = page.tables["prompts"]
    assert len(tune) == 2 and dict(zip(tune[0], tune[1]))["seed"] == "2"
    assert len(page.images) == 1
    check_png(page.images[0])


def test_context_marks_the_firing_token_and_skips_soft_prompt_tokens():
    from neurondb.report.examples import context

    toks = pd.DataFrame({"position": range(7),
                         "token": ["<prompt:0>", "[CLS]", "a", "grand", "##iose", "film", "<b>"],
                         "kind": ["prompt", "special", "input", "input", "input", "input",
                                  "input"]})
    out = context(toks, 4, before=2, after=1)
    assert out == "… a grand<mark>iose</mark> film …"
    assert context(toks, 6, before=1, after=1) == "… film <mark>&lt;b&gt;</mark>"


def test_latency_context_is_printed(bare_store, full_store, tmp_path):
    out = tmp_path / "l.html"
    write_report(full_store.root, out, latency_context={"threads": 2, "cores": 2,
                                                        "load_average": [1.5, 1.25, 0.5]})
    text = Page(out.read_text()).sections["pruning"]
    assert "2 torch thread(s) on 2 CPU core(s), load average 1.50 / 1.25 / 0.50" in text


def test_only_soft_prompt_slots_give_a_note(tmp_path):
    from neurondb.query import predictivity
    from neurondb.testing_stores import make_store, write_periodic_run, write_stats_run

    from .conftest import WIDTHS, planted

    root = make_store(tmp_path / "p", WIDTHS)
    y, a = planted(30, 5)
    a = {k: v[:, :2] for k, v in a.items()}
    write_stats_run(root, "tr", "train", y, ["prompt:0", "prompt:1"], a)
    write_periodic_run(root, "ev", "validation", y, ["prompt:0", "prompt:1"], a)
    predictivity(root, eval="ev", train="tr", name="skill")
    write_report(root, tmp_path / "p.html")
    page = Page((tmp_path / "p.html").read_text())
    assert "only soft-prompt slots" in page.absent["examples"]


def test_examples_prefer_neurons_that_peak_at_an_input_slot():
    from neurondb.report.examples import input_peaked

    f = pd.DataFrame({"slot": ["prompt:8", "mask", "prompt:1", "first"], "score": [0.9, 0.8,
                                                                                 0.7, 0.6]})
    kept, why = input_peaked(f)
    assert list(kept["slot"]) == ["mask", "first"] and "2 of 4" in why
    kept, why = input_peaked(f[f["slot"].str.startswith("prompt:")])
    assert len(kept) == 2 and "Every neuron peaks at a soft-prompt slot" in why
