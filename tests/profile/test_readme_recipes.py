"""The README's profile recipes run as written on a store with the runs they name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import neurondb
from neurondb.testing import save_tiny

README = Path(__file__).resolve().parents[2] / "README.md"


def recipes() -> list[str]:
    text = README.read_text()
    section = text[text.index("### Profile recipes"):text.index("### Correlations between neurons")]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def store(tmp_path_factory, sentiment_dir):
    root = tmp_path_factory.mktemp("recipes")
    model = str(save_tiny("bert", root / "m", head="base", hidden_act="relu"))
    kw = dict(readout="none", profile=True, top_k=4, progress=False, batch_size=4)
    for run, split, template in (("sst2-profile", "validation", None),
                                 ("imdb-profile", "train", None),
                                 ("sst2-prompted-profile", "validation", "review: {text} !")):
        neurondb.extract(model, str(sentiment_dir), root / "s", split=split, run=run,
                         template=template, **kw).close()
    return neurondb.open(root / "s")


def test_there_are_three_recipes():
    assert len(recipes()) == 3


def test_recipes_answer(store):
    ctx, entropy, shared = (store.connection.arrow(sql).to_pandas() for sql in recipes())
    assert len(ctx) == 4 and ctx.context.str.contains(r"\[\[").all()
    assert len(entropy) == 20 and entropy.entropy.between(-1e-12, np.log(2) + 1e-12).all()
    p = store.profile(run="sst2-profile").set_index(["layer", "neuron"]).frac_positive
    q = store.profile(run="imdb-profile").set_index(["layer", "neuron"]).frac_positive
    row = entropy.iloc[0]
    pa, pb = p[(row.layer, row.neuron)], q[(row.layer, row.neuron)]
    w = np.array([pa, pb]) / (pa + pb)
    assert row.entropy == pytest.approx(-(w[w > 0] * np.log(w[w > 0])).sum())
    assert len(shared) == 20 and shared.shared_top.between(0, 1).all()
    top = store.profile_top(kind="top")
    r = shared.iloc[0]
    sel = top[(top.layer == r.layer) & (top.neuron == r.neuron)]
    a = set(zip(*[sel[sel.run == "sst2-profile"][c] for c in ("example_id", "position")]))
    b = set(zip(*[sel[sel.run == "sst2-prompted-profile"][c] for c in ("example_id", "position")]))
    assert r.shared_top == pytest.approx(len(a & b) / len(a))
