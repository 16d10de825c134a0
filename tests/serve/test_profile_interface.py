"""The neuron page over a profile run, through the agreed profile interface
(``/work/notes/profile_schema.md``): ``Store.profile``, ``Store.profile_top`` and
``Store.profile_histogram``, used when a run's mode is ``profile``.

The profile writer is built on another branch; until it is merged, this test stands a profile
run in for the per-token run ``ev``: the three methods answer from ``ev``'s own activations,
with the agreed columns, and the test checks what the page shows and which calls it made.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from starlette.testclient import TestClient

from neurondb.serve import create_app
from neurondb.store import open_store

from .helpers import BASE, Html

K = 3


class FakeProfile:
    """``profile``/``profile_top``/``profile_histogram`` of the agreed interface, computed
    from a per-token run's activations; records each call."""

    def __init__(self, store, run: str):
        self.store, self.run, self.calls = store, run, []
        self.rows = store.rows(run=run)
        self.labels = store.examples(run=run).to_pandas().set_index("example_id")["label"]

    def column(self, stack, layer, neuron) -> np.ndarray:
        return self.store.activations(layer, run=self.run, stack=stack, neurons=[neuron])[:, 0]

    def profile(self, run=None, stack=None, layer=None, neuron=None) -> pd.DataFrame:
        self.calls.append(("profile", run, stack, layer, neuron))
        x = self.column(stack, layer, neuron)
        ex = self.rows.column("example_id").to_numpy()
        y = self.labels.loc[ex].to_numpy()
        q = np.quantile(x, [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
        row = {"run": run, "stack": stack, "layer": layer, "neuron": neuron, "count": x.size,
               "mean": x.mean(), "std": x.std(), "min": x.min(), "max": x.max(),
               "frac_positive": (x > 0).mean(), "q_error": 0.01,
               "label_means": [float(x[y == c].mean()) for c in (0, 1)],
               **{f"q{p:02d}": v for p, v in zip((1, 10, 25, 50, 75, 90, 99), q)}}
        return pd.DataFrame([row])

    def profile_top(self, run=None, stack=None, layer=None, neuron=None, kind=None):
        self.calls.append(("profile_top", run, stack, layer, neuron))
        x = self.column(stack, layer, neuron)
        ex = self.rows.column("example_id").to_numpy()
        pos = self.rows.column("position").to_numpy()
        out = []
        for k, order in (("top", np.lexsort((pos, ex, -x))), ("bottom", np.lexsort((pos, ex, x)))):
            for rank, i in enumerate(order[:K], 1):
                out.append({"run": run, "stack": stack, "layer": layer, "neuron": neuron,
                            "kind": k, "rank": rank, "value": float(x[i]),
                            "example_id": int(ex[i]), "position": int(pos[i])})
        return pd.DataFrame(out)

    def profile_histogram(self, run, stack, layer, neuron):
        self.calls.append(("profile_histogram", run, stack, layer, neuron))
        x = self.column(stack, layer, neuron)
        edges = np.linspace(-1, 1, 21)
        inner, _ = np.histogram(np.clip(x, -1, 1 - 1e-9), bins=edges)
        counts = np.r_[(x < -1).sum(), inner, (x >= 1).sum()].astype(np.int64)
        counts[1] -= counts[0]
        counts[-2] -= counts[-1]
        return edges, counts


def test_neuron_page_of_a_profile_run(full_store, monkeypatch):
    import types

    from neurondb.profile import read

    # a profile without within-model correlation sums (this one is faked on a tokens store)
    monkeypatch.setattr(read, "run_state", lambda store, run: types.SimpleNamespace(corr=None))
    st = open_store(full_store.root)
    try:
        fake = FakeProfile(st, "ev")
        st.run("ev").mode = "profile"
        st.profile, st.profile_top = fake.profile, fake.profile_top
        st.profile_histogram = fake.profile_histogram
        with TestClient(create_app(st), base_url=BASE) as http:
            r = http.get("/neurons/encoder/1/5?run=ev")
        assert r.status_code == 200, r.text[:500]
    finally:
        st.close()
    page = Html(r.text)
    assert {c[0] for c in fake.calls} == {"profile", "profile_top", "profile_histogram"}
    assert all(c[1:] == ("ev", "encoder", 1, 5) for c in fake.calls)
    top = page.ids["top-examples"]
    assert "great" in top and len(re.findall(r'class="ex"', r.text)) <= 2 * K
    peaks = re.findall(r'class="t (p\d|n\d) peak[^"]*"[^>]*>([^<]*)<', r.text)
    assert peaks and peaks[0] == ("p9", "great")   # the top token, shaded darkest and marked
    assert "below and" in r.text and "above the histogram" in r.text   # overflow noted
    assert "has no correlation sums of encoder layer 1" in r.text  # nor per-token tensors
    assert "pos" in r.text and "neg" in r.text  # label means from label_means
