"""Every page over HTTP: content, hostile texts escaped, headers, and the stores without
rankings or profiles."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from neurondb.serve.security import CSP

from .conftest import HOSTILE_TEXT
from .helpers import Html, client

PAGES = ["/", "/runs/ev", "/runs/tr", "/rankings/skill", "/rankings/random?layer=1",
         "/neurons/encoder/1/5", "/neurons/encoder/0/3?run=ev", "/compare",
         "/compare?rankings=skill,random", "/sql", "/sql?q=SELECT+*+FROM+runs"]


@pytest.fixture(scope="module")
def http(full_store):
    with client(full_store.root) as c:
        yield c


@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders_without_script_or_inline_style(http, url):
    r = http.get(url)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    page = Html(r.text)
    assert page.scripts == [] and page.inline == []
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"


def test_overview_lists_model_runs_and_results(http):
    r = http.get("/")
    page = Html(r.text)
    assert "tiny-bert" in r.text
    for link in ("/runs/ev", "/runs/tr", "/rankings/skill", "/rankings/random"):
        assert link in page.links
    assert "per-token" in page.ids["runs"] and "running statistics" in page.ids["runs"]
    assert "90.9%" in page.ids["runs"]  # ev: 10 of 11 predictions right
    assert any(h.startswith("/sql?q=") and "top25" in h for h in page.links)  # the mask


def test_run_page_pages_and_filters(http, full_store):
    page = Html(http.get("/runs/ev").text)
    assert page.ids["examples"].count("✓") == 10 and "✗" in page.ids["examples"]
    neg = Html(http.get("/runs/ev?label=neg").text).ids["examples"]
    assert "boring" in neg and "wonderful" not in neg
    wrong = Html(http.get("/runs/ev?correct=false").text).ids["examples"]
    assert "worst film" in wrong and "boring" not in wrong
    found = Html(http.get("/runs/ev?q=BORING").text).ids["examples"]
    assert "dull and boring" in found and "great" not in found
    assert http.get("/runs/ev?label=1").status_code == 200


def test_ranking_page_sorts_filters_and_links_to_neurons(http):
    page = Html(http.get("/rankings/skill?sort=score&order=desc").text)
    assert "/neurons/encoder/1/5" in page.links  # the planted neuron ranks first in layer 1
    one = Html(http.get("/rankings/skill?layer=1&sort=neuron&order=asc").text)
    rows = re.findall(r"#(\d+)", one.ids["ranking"])
    assert rows == [str(i) for i in range(16)]
    assert not any("/neurons/encoder/0/" in h for h in one.links)
    desc = Html(http.get("/rankings/skill?layer=0&sort=neuron&order=desc").text)
    assert re.findall(r"#(\d+)", desc.ids["ranking"])[0] == "15"


def test_neuron_page_shows_shaded_top_examples_and_results(http):
    r = http.get("/neurons/encoder/1/5")
    page = Html(r.text)
    top = page.ids["top-examples"]
    assert top.count("great") >= 4
    first = re.search(r'<div id="top-examples">(.*?)</div>\s*</div>', r.text, re.S).group(1)
    assert re.search(r'class="t p9 peak k-input"[^>]*>great<', first)
    assert "wonderful" not in top.split("example")[1]  # the first example is a 'great' one
    assert "boring" in page.ids["bottom-examples"] or page.ids["bottom-examples"]
    assert "skill" in page.ids["neuron-rankings"] and "random" in page.ids["neuron-rankings"]
    assert any(h.startswith("/neurons/encoder/1/4") for h in page.links)
    assert any(h.startswith("/neurons/encoder/1/6") for h in page.links)
    assert "ev" in page.ids["stats"] and "tr" in page.ids["stats"]
    assert page.ids["partners"].count("#") == 8


def test_neuron_page_masks_and_suppression(http, full_store):
    rank = pd.read_parquet(full_store.root / "results" / "rankings" / "skill.parquet")
    mask = pd.read_parquet(full_store.root / "results" / "masks" / "top25.parquet")
    first = rank[(rank.layer == 1) & (rank["rank"] == 1)].iloc[0]
    r = http.get(f"/neurons/encoder/1/{int(first.neuron)}")
    assert "top25" in r.text  # the mask of the top quarter of each layer of 'skill'
    assert "sup</b> removed it (ranking skill, from rate 5.0%)" in r.text
    assert "accuracy 60.0% against 85.0% with random neurons and 90.0% without" in r.text
    inside = set(zip(mask.layer, mask.neuron))
    out = next(n for n in range(16) if (1, n) not in inside)
    r = http.get(f"/neurons/encoder/1/{out}")
    assert "In no mask" in r.text and "No suppression result removed it" in r.text


def test_neuron_page_neighbours_cross_layers(http):
    links = Html(http.get("/neurons/encoder/1/0").text).links
    assert any(h.startswith("/neurons/encoder/0/15") for h in links)
    links = Html(http.get("/neurons/encoder/0/15").text).links
    assert any(h.startswith("/neurons/encoder/1/0") for h in links)


def test_hostile_texts_and_tokens_are_escaped(http):
    for url in ("/runs/ev", "/neurons/encoder/1/5", "/sql?q=SELECT+text+FROM+examples"):
        r = http.get(url)
        assert "<script>alert" not in r.text and "<img src=x" not in r.text
        assert "&lt;script&gt;alert(" in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text
        assert Html(r.text).scripts == []
    r = http.get("/neurons/encoder/1/5")
    assert "&lt;s&gt;" in r.text  # a model token '<s>'
    assert "Ġgreat" in r.text and "▁great" in r.text  # raw tokens kept in the hover title
    api = http.get("/api/sql", params={"q": "SELECT text FROM examples WHERE text LIKE '%<script%'"})
    assert api.json()["rows"] == [[HOSTILE_TEXT]]


def test_reflected_parameters_are_escaped(http):
    r = http.get("/runs/ev", params={"q": "<script>x</script>\"'"})
    assert r.status_code == 200 and "<script>x" not in r.text
    r = http.get("/rankings/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert r.status_code == 404 and "<script>alert" not in r.text and "&lt;script&gt;" in r.text


@pytest.mark.parametrize("url", ["/neurons/encoder/2/0", "/neurons/encoder/0/16",
                                 "/neurons/encoder/-1/0", "/neurons/encoder/x/0",
                                 "/neurons/decoder/0/0", "/neurons/encoder/0/99999999999",
                                 "/rankings/nope", "/runs/nope", "/neurons/encoder/0/0?run=nope",
                                 "/neurons/encoder/0/0?run=tr", "/compare?rankings=skill,nope",
                                 "/no/such/page"])
def test_bad_path_is_a_404_page(http, url):
    r = http.get(url)
    assert r.status_code == 404
    assert "Traceback" not in r.text and "Not found" in r.text
    assert r.headers["content-security-policy"] == CSP


@pytest.mark.parametrize("url", ["/rankings/skill?layer=9", "/rankings/skill?layer=x",
                                 "/rankings/skill?sort=text", "/rankings/skill?order=up",
                                 "/rankings/skill?page=0", "/rankings/skill?per=100000",
                                 "/runs/ev?correct=maybe", "/runs/ev?label=nope",
                                 "/runs/ev?page=99", "/runs/ev?bogus=1", "/compare?rankings=skill",
                                 "/compare?rankings=skill,random&top=2",
                                 "/neurons/encoder/0/0?x=1", "/sql?limit=0", "/sql?limit=abc"])
def test_bad_query_parameter_is_a_400_page(http, url):
    r = http.get(url)
    assert r.status_code == 400, (url, r.status_code)
    assert "Traceback" not in r.text and "parameter" in r.text


def test_compare_page(http):
    r = http.get("/compare?rankings=skill,random")
    page = Html(r.text)
    assert "mean Spearman" in r.text and r.text.count("<circle") == 32
    assert len(re.findall(r"<tr><td>encoder</td>", page.ids and r.text)) == 2


def test_store_without_rankings_or_profile(bare_store):
    with client(bare_store) as http:
        r = http.get("/")
        assert r.status_code == 200 and "no-results" in r.text
        r = http.get("/neurons/encoder/1/5")
        assert r.status_code == 200
        page = Html(r.text)
        assert "No ranking in this store" in page.ids["no-rankings"]
        assert "great" in page.ids["top-examples"]
        assert "In no mask" in r.text and "No suppression result" in r.text
        assert http.get("/compare").status_code == 200
        assert http.get("/compare?rankings=a,b").status_code == 404
        assert http.get("/rankings/skill").status_code == 404


def test_statistics_only_store(tmp_path):
    from neurondb.testing_stores import make_store, write_stats_run
    from tests.report.conftest import SLOTS, planted

    root = make_store(tmp_path / "s", {"encoder": (16, 16)})
    y, a = planted(20, 4)
    write_stats_run(root, "tr", "train", y, SLOTS, a)
    with client(root) as http:
        r = http.get("/neurons/encoder/1/5")
        assert r.status_code == 200 and "statistics only" in r.text
        assert http.get("/runs/tr").status_code == 200


def test_partners_of_a_large_run_come_from_a_sample(full_store, monkeypatch):
    from neurondb.serve import context

    monkeypatch.setattr(context, "PARTNER_BUDGET", 32 * 40)
    with client(full_store.root) as http:
        r = http.get("/neurons/encoder/1/5")
    assert "Pearson over 40 evenly spaced of the 86 captured tokens of ev" in r.text
    monkeypatch.setattr(context, "PARTNER_MAX_SCAN", 100)
    with client(full_store.root) as http:
        r = http.get("/neurons/encoder/1/5")
    assert "too large to correlate on the fly" in r.text


def test_demo_prints_the_serve_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import neurondb.demo
    from neurondb.cli.app import app

    class Summary:
        def text(self) -> str:
            return "summary"

    monkeypatch.setattr(neurondb.demo, "run_demo", lambda cfg, say: Summary())
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"neurondb serve {tmp_path / 'd' / 'store'}" in r.output


def test_two_stores_opened_together(full_store, bare_store):
    with client(full_store.root, bare_store) as http:
        page = Html(http.get("/").text)
        assert {"/runs/ev", "/runs/only"} <= set(page.links)
        assert http.get("/runs/only").status_code == 200
        r = http.get("/neurons/encoder/1/5?run=only")
        assert r.status_code == 200 and "great" in Html(r.text).ids["top-examples"]


def test_neuron_jump_form_redirects(http):
    r = http.get("/neurons?layer=1&neuron=5", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/neurons/encoder/1/5"
    r = http.get("/neurons?stack=encoder&layer=0&neuron=3&run=ev", follow_redirects=False)
    assert r.headers["location"] == "/neurons/encoder/0/3?run=ev"
    assert http.get("/neurons?layer=1&neuron=99").status_code == 404
    assert http.get("/neurons?layer=x").status_code == 400
    assert 'action="/neurons"' in http.get("/").text
