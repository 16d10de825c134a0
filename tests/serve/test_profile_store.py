"""The neuron page over a real profile run (``neurondb extract --profile``): its top and
bottom tokens come from ``neuron_top`` with their sentences, and its statistics and histogram
from the profile, equal to what the store's own profile tables say."""

from __future__ import annotations

import html
import re

import pytest
from starlette.testclient import TestClient

import neurondb
from neurondb.serve import create_app
from neurondb.store import open_store

from .helpers import BASE


@pytest.fixture(scope="module")
def profile_store(tmp_path_factory, tiny_path, sentiment_dir):
    out = tmp_path_factory.mktemp("serve-profile") / "s"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, split="train",
                     readout="none", profile=True, top_k=4, run="p", progress=False).close()
    return out


def test_neuron_page_reads_the_profile(profile_store):
    store = open_store(profile_store)
    top = store.profile_top(run="p", stack="encoder", layer=1, neuron=7)
    prof = store.profile(run="p", stack="encoder", layer=1, neuron=7).iloc[0]
    best = top[(top["kind"] == "top") & (top["rank"] == 1)].iloc[0]
    ex = store.examples(run="p").to_pandas().set_index("example_id")
    with TestClient(create_app(store), base_url=BASE) as c:
        r = c.get("/neurons/encoder/1/7?run=p")
        assert r.status_code == 200, r.text[:500]
        page = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", r.text)))
        assert "from profile (neuron_top)" in page
        i = page.index("Top activations")
        first = re.search(r"example (\d+) label", page[i:]).group(1)
        assert int(first) == int(best["example_id"])  # the top-1 token's example comes first
        words = [w for w in ex.loc[int(best["example_id"]), "text"].split()]
        assert all(w in page for w in words[1:])  # with its sentence
        stats = page[page.index("Statistics"):]
        assert f" {int(prof['count'])} " in stats  # n from neuron_profile
        assert c.get("/").status_code == 200
    store.close()


def test_partners_of_a_profile_run_come_from_its_correlation_sums(tmp_path, tiny_path,
                                                                   sentiment_dir):
    """A profile run extracted with --correlate-layers lists a neuron's partners from its exact
    sums over every token (the same neurons and r as ``correlate-neurons --runs RUN``); a
    layer outside the correlated ones says how to get them."""
    from neurondb.query.correlate_neurons import within_model

    out = tmp_path / "s"
    neurondb.extract(str(tiny_path("bert")), str(sentiment_dir), out, split="train",
                     readout="none", profile=True, top_k=4, run="p", correlate_layers=[1],
                     progress=False).close()
    store = open_store(out)
    want = within_model(store, "p", top=8, write=False).table
    want = want[(want.layer == 1) & (want.neuron == 7) & (want["corr"] > 0)]
    with TestClient(create_app(store), base_url=BASE) as c:
        r = c.get("/neurons/encoder/1/7?run=p")
        assert r.status_code == 200, r.text[:500]
        part = r.text[r.text.index('id="partners"'):]
        part = part[:part.index("</table>")]
        got = re.findall(r'/neurons/encoder/(\d+)/(\d+)', part)
        assert got == [(str(a), str(b)) for a, b in
                       zip(want.partner_layer, want.partner_neuron)] and got
        rs = [float(x) for x in re.findall(r'<td class="n">([-0-9.]+)</td>', part)]
        assert rs == pytest.approx(want["corr"].tolist(), abs=6e-4)
        page = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", r.text)))
        n = int(store.run("p").n_tokens)
        assert f"Pearson over all {n:,} tokens of p, among layers 1 (exact" in page
        other = c.get("/neurons/encoder/0/7?run=p")
        assert "has no correlation sums of encoder layer 0" in html.unescape(other.text)
    store.close()


def test_a_profile_run_shows_no_storage_dtype(profile_store):
    """A profile stores no tensors: the overview, its run page and the report show no dtype
    (its run.json records the command's default, float16)."""
    from neurondb.report.collect import store_summary

    store = open_store(profile_store)
    assert store.run("p").dtype == "float16" and store.run("p").stored_dtype is None
    with TestClient(create_app(store), base_url=BASE) as c:
        for url in ("/", "/runs/p"):
            r = c.get(url)
            assert r.status_code == 200 and "float16" not in r.text, url
    assert [r.dtype for r in store_summary(store).runs] == [None]
    store.close()
